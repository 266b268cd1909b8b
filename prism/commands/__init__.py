"""Sub-commands of ``prism``; each module exposes ``register(subparsers)``.

A command handler takes ``(args, settings)`` and returns a process exit code.
"""
