"""The metric names a PromQL expression reads, for checking dashboards against real scrapes.

Not a PromQL parser: it drops string literals, label matchers ``{...}``, ranges
``[...]`` and ``by``/``without`` label lists, then keeps every identifier that
is not a function call, a keyword or a number. Enough for dashboard queries;
the unit tests pin what it returns.
"""

from __future__ import annotations

import re

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if re.match(r"\s*\(", text[m.end() :]) or m[0].lower() in KEYWORDS:
            continue  # a function or aggregation, or an operator word
        if m.start() and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # the exponent of a number (1e3)
        names.add(m[0])
    return names


def exposed_names(families) -> set[str]:
    """Every series name a scrape can answer for: samples, and the declared families'
    own names by type (a labelled family with no child yet declares itself only)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", "")}  # fmt: skip
    out = set()
    for f in families:
        out.update(s.name for s in f.samples)
        out.update(f.name + sfx for sfx in suffixes.get(f.type, ("",)))
    return out
