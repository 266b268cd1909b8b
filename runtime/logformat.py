"""Log lines that log shippers parse without a custom pattern: logfmt, or JSON lines.

logfmt (the default) is ``ts=... level=... logger=... msg="..."`` followed by
any ``extra={...}`` fields of the call; JSON (``PRISM_LOG_FORMAT=json``) is one
object per line with the same keys. Both put a traceback in ``exc`` and
timestamps in UTC RFC 3339 with milliseconds (``2026-01-02T03:04:05.678Z``).
The message stays whole in ``msg``: the key=value text many calls put in it
is for people; ``extra`` fields are for machines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any

__all__ = ["FORMATS", "JsonFormatter", "LogfmtFormatter", "configure", "logfmt_value"]

# what a LogRecord carries itself: anything else on it came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# control characters and what str.splitlines() breaks at: escaped, never raw
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
_BARE = re.compile(rf"[^\s=\"\\{_CONTROL}]+")  # a value that needs no quotes
_ESCAPE = re.compile(rf"[{_CONTROL}]")


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """ts, level, logger, msg, the call's extra fields, and exc (if any) in this order."""
    out: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_") and key not in out:
            out[key] = value
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = formatter.formatStack(record.stack_info)
    return out


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: bare when it can be, else a quoted, escaped string."""
    text = "" if value is None else str(value)
    if _BARE.fullmatch(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    escaped = _ESCAPE.sub(lambda m: f"\\u{ord(m[0]):04x}", escaped)
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs, one record per line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self)
        return " ".join(f"{_key(k)}={logfmt_value(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written as their str()."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), default=str, ensure_ascii=False)


def _key(name: str) -> str:
    """A key logfmt can hold: no spaces, quotes or '='."""
    return re.sub(r"[\s=\"]", "_", name) or "_"


FORMATS = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


def configure(level: str, fmt: str = "logfmt") -> None:
    """Every Prism process's root logger: one stderr handler in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATS[fmt]())
    logging.basicConfig(level=level.upper(), handlers=[handler])
