"""The hybrid's experts one by one: pooled ROC AUC of each expert's own scores.

Not a test: prints figures measured in this run. Why: target (a) compares the
hybrid with the federated and local *architectures*; when the hybrid trails,
this says whether its mixer picked the wrong expert (the mix below its best
expert on the events it mixed) or the experts themselves are weaker there.
The ``prism compare`` engine runs the hybrid fleet alone, at the CLI's flags;
each scored event's expert probabilities (the personal model, the global and,
while awake, the global shifted to the site's base rate) and the mixed score
are kept, and graded against the log's labels over the events the global was
mixed on. ``shifted-or-global`` is the shifted copy where it was awake and the
global elsewhere. Last, each expert's mixer weight at the end of the run, the
lowest and highest over the sites.

Run: ``.venv/bin/python bench/hybrid_experts.py LOG.avro [--task fraud]
[COMPARE FLAGS ...]``, e.g. ``... fraud23.avro --max-move 0.02``
(docs/learning-quality.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agents.learner import SHIFTED, EdgeLearner
from prism.cli import build_parser
from prism.commands.compare import prepare
from prism.compare.engine import simulate
from prism.compare.report import exact_auc


def expert_scores(
    argv: Sequence[str],
) -> tuple[dict[str, dict[str, float]], dict[str, bool], dict[str, EdgeLearner]]:
    """Per scored event id: each awake expert's probability and the mix; the labels; and
    the hybrid's sites (their mixers as the run left them)."""
    kept: dict[str, dict[str, float]] = {}
    sites: dict[str, EdgeLearner] = {}
    score = EdgeLearner.score

    def keeping(self: EdgeLearner, *args: Any, **kwargs: Any) -> Any:
        scored = score(self, *args, **kwargs)
        sites[self.node_id] = self
        event_id = kwargs.get("event_id", args[3] if len(args) > 3 else None)
        if event_id is not None and event_id in self._scored:
            kept[event_id] = {**self._scored[event_id], "mix": scored.score}
        return scored

    args = build_parser().parse_args(
        ["compare", "--no-progress", "--architectures", "hybrid", *argv]
    )
    stream, config = prepare(args)
    EdgeLearner.score = keeping  # type: ignore[method-assign]
    try:
        simulate(stream, config)
    finally:
        EdgeLearner.score = score  # type: ignore[method-assign]
    labels = {
        e: bool(y)
        for e, y, known in zip(stream.event_ids, stream.labels, stream.labelled, strict=True)
        if known
    }
    return kept, labels, sites


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    flags = ["--data", argv[0], *(["--task", "fraud"] if "--task" not in argv else []), *argv[1:]]
    kept, labels, sites = expert_scores(flags)
    ids = [e for e, s in kept.items() if "global" in s and e in labels]
    y = np.array([labels[e] for e in ids])
    columns = {
        "personal": [kept[e]["personal"] for e in ids],
        "global": [kept[e]["global"] for e in ids],
        "shifted-or-global": [kept[e].get(SHIFTED, kept[e]["global"]) for e in ids],
        "mix": [kept[e]["mix"] for e in ids],
    }
    print(f"events mixed and labelled: {len(ids)} of {len(kept)} kept")
    for name, scores in columns.items():
        auc = exact_auc(y, np.asarray(scores, dtype=np.float64))
        print(f"{name:>18}: {'n/a' if auc is None else f'{auc:.4f}'}")
    weights = [s.mixer.weights(dict.fromkeys(s.mixer.names, 0.5)) for s in sites.values()]
    for name in sites[next(iter(sites))].mixer.names if sites else ():
        share = [w[name] for w in weights]
        print(f"{name:>18}: final mixer weight {min(share):.3f}-{max(share):.3f} over the sites")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
