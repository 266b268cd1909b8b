"""The Apache Kafka broker's classpath, assembled from Maven Central and cached.

No Debian package or PyPI wheel ships the broker, so the committed
``resources/pom.xml`` is resolved with Maven into
``settings.cache_dir / f"kafka-{version}" / "libs"``, outside the repo. A marker
file is written only after a complete copy, so an interrupted download is
redone instead of leaving a broker that fails with a missing class.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from prism.stack.state import locked
from runtime.errors import StackError
from runtime.settings import Settings

log = logging.getLogger(__name__)

COMPLETE = ".complete"
# A black-holed network hangs instead of refusing; give up well before CI does.
MAVEN_TIMEOUT_S = 900.0


def libs_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"


def maven_command(settings: Settings, libs: Path) -> list[str]:
    pom = resources.files("prism.stack") / "resources" / "pom.xml"
    return [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
        f"-Dkafka.version={settings.kafka_version}",
    ]


def unreachable(settings: Settings, detail: str) -> StackError:
    """The one message for "no broker jars": what went wrong and what to do instead."""
    return StackError(
        f"could not fetch the Apache Kafka {settings.kafka_version} broker jars from Maven "
        "Central (is it reachable? is Maven installed? `make setup` installs it).\n"
        "Point Prism at an existing broker instead: export PRISM_KAFKA_BOOTSTRAP=host:port\n"
        f"{detail}"
    )


def ensure_jars(settings: Settings) -> Path:
    """The broker's jar directory, downloaded on first use only."""
    libs = libs_dir(settings)
    if (libs / COMPLETE).is_file():
        return libs
    with locked(libs.parent / "download.lock"):
        if (libs / COMPLETE).is_file():  # another process finished it while we waited
            return libs
        _download(settings, libs)
    return libs


def _download(settings: Settings, libs: Path) -> None:
    if shutil.which("mvn") is None:
        raise unreachable(settings, "mvn is not on PATH.")
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    log.info(
        "fetching Apache Kafka %s jars from Maven Central into %s", settings.kafka_version, libs
    )
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv built by us
            maven_command(settings, libs),
            capture_output=True,
            text=True,
            check=False,
            timeout=MAVEN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        shutil.rmtree(libs, ignore_errors=True)
        raise unreachable(settings, f"mvn gave no answer within {MAVEN_TIMEOUT_S:.0f}s.") from e
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        shutil.rmtree(libs, ignore_errors=True)
        raise unreachable(settings, f"mvn said:\n{(result.stdout + result.stderr)[-2000:]}")
    (libs / COMPLETE).write_text("ok\n")
    log.info("kafka jars ready count=%d dir=%s", len(list(libs.glob("*.jar"))), libs)
