"""The ``prism`` command line: the composition root.

Settings are read once here and passed to every command; logging is configured
once here. Sub-commands live in :mod:`prism.commands`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runtime.errors import PrismError
from runtime.logformat import configure as configure_logging
from runtime.settings import describe_settings, load_settings

# Each module registers its own sub-commands; adding a command is one line here.
COMMAND_MODULES = (
    "prism.commands.stack",
    "prism.commands.topics",
    "prism.commands.data",
    "prism.commands.demo",
    "prism.commands.models",
    "prism.commands.central",
    "prism.commands.merger",
    "prism.commands.edge",
    "prism.commands.compare",
    "prism.commands.up",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prism",
        description="Centralized and federated online learning over Kafka and Redis.",
        epilog="Settings (environment variables, overridden by flags):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default=None, help="Override PRISM_LOG_LEVEL.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(use_stack_file=getattr(args, "use_stack_file", True))
    configure_logging(args.log_level or settings.log_level, settings.log_format)
    try:
        return int(args.handler(args, settings) or 0)
    except PrismError as e:
        print(f"prism: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
