"""pyproject.toml holds ranges, constraints.txt the versions the suite runs on, and the
two agree: every dependency (runtime and extras) is pinned, every pin is inside its
range, and `make setup` installs from the pins with every extra."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = [Requirement(d) for d in PROJECT["project"]["dependencies"]]
EXTRAS = {
    extra: [Requirement(d) for d in deps]
    for extra, deps in PROJECT["project"]["optional-dependencies"].items()
}
EVERY = DEPENDENCIES + [r for deps in EXTRAS.values() for r in deps]


def read_pins(text: str) -> dict[str, Version]:
    """``name==version`` lines of a constraints file; comments and blanks skipped."""
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt: not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(match.group(2))
    return pins


PINS = read_pins((ROOT / "constraints.txt").read_text())


def disagreements(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """What is wrong between ranges and pins: unpinned, or pinned outside the range."""
    wrong = []
    for req in requirements:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            wrong.append(f"{req.name}: not pinned")
        elif not req.specifier.contains(pin, prereleases=True):
            wrong.append(f"{req.name}: pinned {pin}, outside {req.specifier}")
    return wrong


def test_every_dependency_is_pinned_inside_its_range() -> None:
    assert disagreements(EVERY, PINS) == []


def test_the_agreement_check_finds_a_pin_outside_its_range_or_missing() -> None:
    river = [Requirement("river>=0.26.1,<0.27")]
    assert disagreements(river, {"river": Version("0.26.1")}) == []
    assert disagreements(river, {"river": Version("0.27.0")}) == [
        "river: pinned 0.27.0, outside <0.27,>=0.26.1"
    ]
    assert disagreements(river, {}) == ["river: not pinned"]
    with pytest.raises(AssertionError, match="not a name==version"):
        read_pins("river>=0.26\n")


@pytest.mark.parametrize("req", EVERY, ids=lambda r: r.name)
def test_every_dependency_is_a_range_with_both_bounds(req: Requirement) -> None:
    """A library that pins exactly cannot be installed beside anything else; one
    without an upper bound breaks on the next major."""
    operators = {s.operator for s in req.specifier}
    assert "==" not in operators and ">=" in operators and "<" in operators, str(req)


def test_extras_split_the_optional_packages_from_the_runtime_ones() -> None:
    runtime = {canonicalize_name(r.name) for r in DEPENDENCIES}
    assert {"faust-streaming", "aiokafka", "mode-streaming", "matplotlib"}.isdisjoint(runtime)
    assert {r.name for r in EXTRAS["faust"]} == {"faust-streaming", "aiokafka", "mode-streaming"}
    assert {r.name for r in EXTRAS["plot"]} == {"matplotlib"}
    assert {"pytest", "hypothesis", "packaging"} <= {r.name for r in EXTRAS["test"]}


def test_make_setup_installs_every_extra_from_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.M)
    assert stamp and set(stamp.group(1).split()) >= {"pyproject.toml", "constraints.txt"}
    extras = re.search(r"^EXTRAS := (.*)$", makefile, re.M)
    assert extras and set(extras.group(1).split(",")) == set(EXTRAS)
    assert "pip install -q -c constraints.txt -e '.[$(EXTRAS)]'" in makefile


def test_license_is_an_spdx_expression_with_its_text_beside_it() -> None:
    assert PROJECT["project"]["license"] == "Apache-2.0"
    assert PROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    backend = [Requirement(r) for r in PROJECT["build-system"]["requires"]]
    setuptools = next(r for r in backend if r.name == "setuptools")
    assert not setuptools.specifier.contains("76.1")  # SPDX strings need setuptools >= 77


def _needed(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots pull in, through the installed packages' metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r.name, frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in {"", *extras}
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def test_constraints_pin_exactly_what_the_dependencies_pull_in() -> None:
    """No stray tool of a developer's venv (py-spy, ipython) and nothing missing:
    the pins are the dependency closure of pyproject in the venv `make setup` built."""
    needed = _needed(EVERY)
    assert sorted(set(PINS) - needed) == [], "pinned but needed by nothing in pyproject"
    assert sorted(needed - set(PINS)) == [], "needed but not pinned"
