"""The real docker-compose.yml, run with real Docker Compose on this machine's engine.

``standins/build.sh`` installs Debian's Docker engine and builds (once per machine)
Docker Compose and local images tagged as the official ones the compose file names;
the Prism image is built from ./Dockerfile on every run (cached layers). The stack
runs as its own compose project, reached only through the ports it publishes on
127.0.0.1; whatever happens, ``down -v`` removes its containers, networks and volumes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from helpers.compose import BUILD, SASL, Compose


@pytest.fixture(scope="session")
def engine() -> None:
    """Docker engine, Compose and the stand-in images (seconds once cached)."""
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{BUILD} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def compose(engine: None) -> Iterator[Compose]:
    """The base stack's project; built, emptied before and destroyed after."""
    stack = Compose()
    stack.destroy()  # a run killed before its finalizer left something behind
    sasl = Compose(files=SASL)
    sasl.destroy()
    before = _image_id("prism:latest")
    stack("build", timeout=900)
    if before and before != _image_id("prism:latest"):  # the replaced build, now untagged
        subprocess.run(["docker", "image", "rm", before], capture_output=True, timeout=120)
    try:
        yield stack
    finally:
        stack.destroy()
        sasl.destroy()


def _image_id(tag: str) -> str | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or None
