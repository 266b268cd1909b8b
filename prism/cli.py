"""The ``prism`` command line: the composition root.

Settings are read once here and passed to every command; logging is configured
once here. Sub-commands live in :mod:`prism.commands`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Sequence

from prism.version import version
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
    "prism.commands.keys",
    "prism.commands.central",
    "prism.commands.merger",
    "prism.commands.shadow",
    "prism.commands.edge",
    "prism.commands.compare",
    "prism.commands.up",
)

#: What ``prism`` exits with; every :class:`PrismError`'s ``exit_code`` is one of these
#: (tests/unit/test_cli_help.py), and argparse exits 2 on a flag it cannot parse.
EXIT_CODES = (
    (0, "success"),
    (
        1,
        "the command ran and found a failure: `stack status`, `ps` or `status` saw a "
        "component down, `replay` could not deliver every record, a service stopped on an error",
    ),
    (
        2,
        "usage or set-up: a bad flag or value, a missing extra, no Kafka / Redis configured "
        "or reachable, a refused `central reset`",
    ),
    (3, "not found: a model, node or file that does not exist"),
    (
        4,
        "bad data: an event log or data set that cannot be read or written, a registry "
        "model that fails to decode or verify",
    ),
    (
        70,
        "an edge agent stopped on its own bug: more than --max-bugs-in-row records in a row "
        "raised (not restarted by the supervisor)",
    ),
    (
        77,
        "permission refused: the Redis user may not write the registry (operator commands "
        "need the merger's write user, not the read-only one)",
    ),
    (130, "interrupted (Ctrl-C)"),
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (the ArgumentDefaultsHelpFormatter rule),
    except where the help already says it or there is none to show (None, a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Commands(argparse._SubParsersAction):
    """Sub-command parsers whose own ``--help`` opens with the line the list shows."""

    def add_parser(self, name: str, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("help"):
            kwargs.setdefault("description", kwargs["help"])
        return super().add_parser(name, **kwargs)


class PrismParser(argparse.ArgumentParser):
    """The parser of ``prism`` and, through ``add_subparsers``, of every sub-command."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def describe_exit_codes() -> str:
    return "\n".join(
        textwrap.fill(meaning, 88, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, meaning in EXIT_CODES
    )


def build_parser() -> argparse.ArgumentParser:
    parser = PrismParser(
        prog="prism",
        description="Centralized and federated online learning over Kafka and Redis.",
        epilog="Settings (environment variables, overridden by flags):\n"
        + describe_settings()
        + "\n\nExit codes:\n"
        + describe_exit_codes(),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
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
