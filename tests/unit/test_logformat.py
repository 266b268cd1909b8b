"""Log lines (runtime/logformat.py): strict logfmt by default, JSON lines on request.

The logfmt parser below is deliberately strict (what Loki's and Vector's
parsers accept): bare values have no spaces, quotes, '=' or control
characters; quoted values escape '"' and '\\'; pairs are separated by one space.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.logformat import JsonFormatter, LogfmtFormatter, logfmt_value

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PAIR = re.compile(
    r'([^\s="\\]+)=(?:"((?:[^"\\\x00-\x1f]|\\["\\nrt]|\\u[0-9a-f]{4})*)"|([^\s="\\\x00-\x1f\x7f]*))'
)
ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """Every pair of one line, or AssertionError where the line stops being logfmt."""
    assert "\n" not in line, "one record, one line"
    out, pos = {}, 0
    while pos < len(line):
        m = PAIR.match(line, pos)
        assert m, f"not logfmt at {pos}: {line[pos : pos + 40]!r}"
        key, quoted, bare = m.groups()
        assert key not in out, f"key {key} twice"
        if quoted is None:
            out[key] = bare
        else:
            out[key] = re.sub(
                r"\\(u[0-9a-f]{4}|.)",
                lambda e: chr(int(e[1][1:], 16)) if e[1][0] == "u" else ESCAPES[e[1]],
                quoted,
            )
        pos = m.end()
        if pos < len(line):
            assert line[pos] == " ", f"pairs are separated by a space at {pos}: {line!r}"
            pos += 1
    return out


def emit(formatter: logging.Formatter, msg: str, *args, exc: bool = False, **extra) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("prism.test.logformat")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    if exc:
        try:
            raise ValueError('bad "value"\nsecond line')
        except ValueError:
            logger.exception(msg, *args, extra=extra)
    else:
        logger.info(msg, *args, extra=extra)
    return stream.getvalue()


def test_a_line_has_ts_level_logger_msg_then_the_extra_fields() -> None:
    line = emit(LogfmtFormatter(), "partition assigned worker=%s", "w1", partition=3).rstrip("\n")
    assert line.startswith("ts=") and " level=info logger=prism.test.logformat msg=" in line
    fields = parse_logfmt(line)
    assert list(fields) == ["ts", "level", "logger", "msg", "partition"]
    assert TS.fullmatch(fields["ts"]), fields["ts"]
    assert fields["msg"] == "partition assigned worker=w1" and fields["partition"] == "3"


messages = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@given(msg=messages, value=messages)
def test_every_message_and_value_round_trips_through_a_strict_parser(msg: str, value: str) -> None:
    lines = emit(LogfmtFormatter(), "%s", msg, detail=value).splitlines()
    assert len(lines) == 1
    fields = parse_logfmt(lines[0])
    assert fields["msg"] == msg and fields["detail"] == value


def test_bare_values_stay_bare_and_the_rest_is_quoted() -> None:
    assert logfmt_value("central-fraud") == "central-fraud"
    assert logfmt_value(3.5) == "3.5"
    assert logfmt_value("") == '""'
    assert logfmt_value("a b") == '"a b"'
    assert logfmt_value("k=v") == '"k=v"'
    assert logfmt_value('say "hi"\n') == r'"say \"hi\"\n"'


def test_an_exception_is_in_the_line_with_its_traceback() -> None:
    lines = emit(LogfmtFormatter(), "batch failed records=%d", 4, exc=True).splitlines()
    assert len(lines) == 1
    fields = parse_logfmt(lines[0])
    assert fields["level"] == "error" and fields["msg"] == "batch failed records=4"
    assert fields["exc"].startswith("Traceback (most recent call last):")
    assert 'ValueError: bad "value"\nsecond line' in fields["exc"]


def test_json_lines_carry_the_same_fields_and_the_exception() -> None:
    line = emit(JsonFormatter(), "round closed %s", {"v": 1}, model="fraud-linear")
    record = json.loads(line)
    assert list(record) == ["ts", "level", "logger", "msg", "model"]
    assert TS.fullmatch(record["ts"]) and record["msg"] == "round closed {'v': 1}"
    failed = json.loads(emit(JsonFormatter(), "boom", exc=True, obj=object()))
    assert failed["level"] == "error" and "ValueError" in failed["exc"]
    assert failed["obj"].startswith("<object object")  # not JSON: written as its str()


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_the_cli_logs_in_the_format_prism_log_format_names(fmt: str, tmp_path) -> None:
    """A real `prism` process: PRISM_LOG_FORMAT reaches the root logger of every command."""
    code = (
        "import logging, sys; from prism.cli import main; "
        "sys.argv = ['prism', 'ps']; main(['ps']); "
        "logging.getLogger('prism.x').warning('after %s', 'main', extra={'k': 'v w'})"
    )
    env = {"PRISM_LOG_FORMAT": fmt, "PRISM_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    line = [x for x in done.stderr.splitlines() if "after main" in x][-1]
    fields = json.loads(line) if fmt == "json" else parse_logfmt(line)
    assert fields["level"] == "warning" and fields["logger"] == "prism.x" and fields["k"] == "v w"
