"""The whole ``prism`` argparse tree: every option has help, defaults are shown,
no internal command or ``==SUPPRESS==`` leaks into any help screen, exit codes
are listed, and the optional extras are imported only by the paths that choose them."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import prism.commands
from prism.cli import EXIT_CODES, build_parser, main
from runtime.errors import PrismError

ROOT = Path(__file__).resolve().parents[2]


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("prism",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


PARSERS = list(walk(build_parser()))
OPTIONS = [
    (path, action)
    for path, parser in PARSERS
    for action in parser._actions
    if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
]


def test_the_walk_sees_the_whole_tree() -> None:
    commands = {" ".join(path) for path, _ in PARSERS}
    assert {"prism central run", "prism central reset", "prism datagen fraud"} <= commands
    assert len(OPTIONS) > 150


@pytest.mark.parametrize(
    "path, action", OPTIONS, ids=[f"{' '.join(p)} {a.dest}" for p, a in OPTIONS]
)
def test_every_option_and_argument_has_help(path: tuple[str, ...], action: argparse.Action) -> None:
    assert action.help and action.help is not argparse.SUPPRESS


def test_every_non_trivial_default_is_in_its_help_screen() -> None:
    """A switch (False) or an unset option (None) has nothing to show; any other
    default appears, by the formatter or in the help's own words ("default")."""
    missing = []
    for path, parser in PARSERS:
        text = re.sub(r"\s+", "", parser.format_help())  # argparse wraps inside a value too
        for action in parser._actions:
            default = action.default
            if not action.option_strings or default in (None, argparse.SUPPRESS, [], False):
                continue
            shown = re.sub(r"\s+", "", f"(default: {default})") in text
            if not shown and "default" not in (action.help or "").lower():
                missing.append(f"{' '.join(path)} {action.option_strings[0]}={default!r}")
    assert missing == []


def test_the_formatter_shows_a_default_it_is_given() -> None:
    """The check above could pass on a formatter that never adds anything; it does."""
    text = " ".join(dict(PARSERS)[("prism", "central", "run")].format_help().split())
    assert "events per mini-batch (default: 1000)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_no_help_screen_leaks_suppress_or_lists_the_internal_supervisor() -> None:
    for path, parser in PARSERS:
        assert "==SUPPRESS==" not in parser.format_help(), " ".join(path)
    top = build_parser().format_help()
    assert "supervise" not in top
    assert build_parser().parse_args(["supervise", "/tmp/x"]).home == Path("/tmp/x")  # still runs


def test_central_is_described_by_its_default_engine() -> None:
    top = " ".join(build_parser().format_help().split())
    assert "central The central online learner (confluent-kafka batches; Faust optional)" in top


def test_version_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    from prism import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"prism {__version__}")


def test_version_without_installed_metadata_falls_back_to_the_source_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib import metadata

    from prism import __version__, version

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", missing)
    assert version.version() == f"{__version__} (not installed)"


def _error_classes() -> set[type[PrismError]]:
    for package in ("prism", "runtime", "streams", "edge_agents"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith(("errors", "client", "redis_outage", "kafka_security", "extras")):
                importlib.import_module(info.name)
    found, todo = set(), [PrismError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_exit_code_an_error_can_give_is_listed_in_help() -> None:
    listed = {code for code, _ in EXIT_CODES}
    errors = _error_classes()
    assert {e.__name__ for e in errors} >= {"StackError", "DataError", "MissingExtraError"}
    assert {e.exit_code for e in errors} <= listed
    epilog = " ".join(build_parser().format_help().split())
    for code, meaning in EXIT_CODES:
        assert f"{code} {' '.join(meaning.split())}" in epilog


def test_the_docs_list_the_same_exit_codes() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text.split("## Exit codes", 1)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {code for code, _ in EXIT_CODES}


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"faust", "aiokafka", "mode", "matplotlib"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
    """
)


def _without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_default_paths_import_no_optional_package() -> None:
    """The CLI, the kafka engine, the merger, the edge and compare without --plot
    load with faust/aiokafka/mode/matplotlib absent, and never try to import them."""
    commands = [f"prism.commands.{m.name}" for m in pkgutil.iter_modules(prism.commands.__path__)]
    modules = [
        *("prism.cli", "streams.central.run", "streams.central.kafka_loop", "streams.merger.run"),
        *("edge_agents.run", "prism.compare.engine", "prism.compare.report", "prism.compare.sweep"),
        *commands,
    ]
    result = _without_extras(
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        from prism.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0, e.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert loaded == [], loaded
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("ok") and "Exit codes:" in result.stdout


def test_the_blocker_really_blocks() -> None:
    result = _without_extras("import matplotlib")
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize(
    "argv, extra",
    [
        (["central", "run", "--engine", "faust"], "faust"),
        (["compare", "--data", "nowhere.avro", "--plot", "x.png"], "plot"),
    ],
)
def test_choosing_an_option_without_its_extra_names_the_extra(argv: list[str], extra: str) -> None:
    result = _without_extras(
        f"""
        from prism.cli import main
        sys.exit(main({argv!r}))
        """
    )
    assert result.returncode == 2, result.stderr
    assert f"pip install 'prism-stream[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
