"""README is the front door and docs/ the reference behind it: links resolve, the two
set-up commands stay what CI runs, and the settings table lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (dest.suffix == ".md" and anchor not in {"", *anchors(dest)}):
            broken.append(target)
    assert broken == [], f"{page.name}: links to missing files or headings: {broken}"


def test_the_checker_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Top\n\n[a](p.md#top) [b](missing.md) [c](p.md#nowhere)\n")
    assert links(page) == ["p.md#top", "missing.md", "p.md#nowhere"]
    assert anchors(page) == {"top"}
    heading = "`prism compare --stack`: the runs before"
    assert slug(heading) == "prism-compare---stack-the-runs-before"


def test_readme_sets_up_with_exactly_make_demo_and_make_test_and_ci_runs_the_second() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^    (\S.*)$", section, re.M)
    assert commands == ["make demo", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]  # fmt: skip
    assert ci[-1].strip() == commands[1]


def test_the_settings_table_lists_every_setting() -> None:
    text = (ROOT / "docs" / "registry-and-topics.md").read_text()
    table = text.split("## Settings", 1)[1]
    listed = set(re.findall(r"^\| `(PRISM_[A-Z_]+)` \|", table, re.M))
    assert listed == {f"PRISM_{name.upper()}" for name in Settings.model_fields}


def test_readme_stays_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move reference material to docs/"
