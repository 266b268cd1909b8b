"""The invariants a chaos run must keep, proved from what is in Kafka, Redis and the edges' files.

Each check returns violations as sentences (empty = it holds) so one run
reports every broken invariant, not the first. What "exactly once" means
where a process died by SIGKILL: its replayed tail is scored again by design
(docs/central.md, checkpoints), so a repeat is allowed only for a target
that took a kill -9. Its score may differ: the centre's score of an event
depends on how many late labels it had learned by then (how its reads of
the two topics interleaved, which a restart changes), an edge's on which
global it held. Repeats and those with another score are counted in the
figures. Everything here reads; nothing is repaired.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis
from helpers.central import assert_checkpoint_matches, reference_models
from helpers.runs import event_ids
from helpers.services import decoded, global_versions

from models.packing import LayoutBook
from models.serialization import global_model_from_record, summary_from_weight_record
from models.specs import get_spec
from models.summary import Summary
from runtime.settings import Settings
from schemas import Codec

SPEC = "fraud-linear"
CODEC = Codec()

__all__ = ["Run", "check"]


@dataclass(frozen=True)
class Run:
    """What the checker needs to know about a finished run."""

    settings: Settings
    group: str  # the central workers' consumer group
    central_log: Path
    edges: Mapping[str, tuple[Path, Path]]  # node -> (its log, its state dir)
    killed: frozenset[str]  # targets that took a kill -9 (their replayed tails may repeat)


def _once(what: str, got: list[tuple[str, float]], want: list[str], may_repeat: bool) -> list[str]:
    """Every wanted id scored, nothing else; a repeat only where allowed."""
    seen = Counter(e for e, _ in got)
    out = []
    missing = set(want) - set(seen)
    if missing:
        out.append(f"{what}: {len(missing)} events never scored, e.g. {sorted(missing)[:3]}")
    extra = set(seen) - set(want)
    if extra:
        out.append(f"{what}: {len(extra)} scores of events it never got, e.g. {sorted(extra)[:3]}")
    twice = {e: n for e, n in seen.items() if n > 1}
    if twice and not may_repeat:
        out.append(f"{what}: {len(twice)} events scored more than once without a kill -9")
    return out


def repeats(got: list[tuple[str, float]]) -> tuple[int, int]:
    """Scores beyond the first per event, and events whose repeats carry another score."""
    values: dict[str, set[float]] = defaultdict(set)
    for e, s in got:
        values[e].add(s)
    return len(got) - len(values), sum(len(v) > 1 for v in values.values())


def central_scores(run: Run, scores: list[dict]) -> tuple[list[str], tuple[int, int]]:
    got = [(r["event_id"], r["score"]) for r in scores if r["source"] == "central"]
    may = any(t.startswith("central") for t in run.killed)
    return _once("centre", got, event_ids(run.central_log), may), repeats(got)


def edge_scores(run: Run, scores: list[dict]) -> tuple[list[str], tuple[int, int]]:
    out, n, differ = [], 0, 0
    for node, (log, home) in run.edges.items():
        got = [(r["event_id"], r["score"]) for r in scores if r["node_id"] == node]
        offline = home / "scores-offline.jsonl"
        if offline.exists():
            rows = (json.loads(x) for x in offline.read_text().splitlines() if x.strip())
            got += [(r["event_id"], r["score"]) for r in rows]
        r = repeats(got)
        n, differ = n + r[0], differ + r[1]
        out += _once(f"edge {node}", got, event_ids(log), node in run.killed)
    return out, (n, differ)


def summaries(run: Run, boot: str) -> tuple[list[str], dict, list]:
    """Each (node, sequence) on model-updates once in content; merged at most once."""
    out: list[str] = []
    sent: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    records: dict[tuple[str, int], tuple[dict, Summary]] = {}
    book = LayoutBook()  # a summary may name a layout an earlier one of its node sent in full
    for _p, _o, r in decoded(boot, run.settings.topic("model-updates")):  # in offset order
        key = (str(r["node_id"]), int(r["sequence"]))
        sent[key].add(json.dumps(r["state"], sort_keys=True, default=repr).encode())
        records[key] = (r, summary_from_weight_record(r, book))
    for (node, seq), bodies in sorted(sent.items()):
        if node in run.edges and len(bodies) > 1:
            out.append(f"summary {node}#{seq} sent with {len(bodies)} different contents")
    for node in run.edges:
        seqs = sorted(s for n, s in sent if n == node)
        if seqs != list(range(1, len(seqs) + 1)):
            out.append(f"edge {node}: summary sequences not 1..n: {seqs[:10]}...")
    versions = list(
        {v.version: v for v in global_versions(boot, run.settings.topic("global-model"))}.values()
    )
    merged = Counter((c.node_id, c.sequence) for v in versions for c in v.contributors)
    twice = {k: n for k, n in merged.items() if n > 1}
    if twice:
        out.append(f"{len(twice)} summaries merged more than once, e.g. {sorted(twice)[:3]}")
    excluded = {(e.node_id, e.sequence) for v in versions for e in v.excluded}
    lost = [k for k in sent if k[0] in run.edges and k not in merged and k not in excluded]
    if lost:
        out.append(f"{len(lost)} edge summaries on model-updates never merged, e.g. {lost[:3]}")
    return out, {k: records[k] for k in merged if k in records}, versions


def registry(
    run: Run, acked: Mapping[tuple[str, int], tuple[dict, Summary]], versions: list
) -> list[str]:
    """The registry's current model: the last published version, and exactly the acked data.

    Exact statistics telescope: an edge's increments add up, a central shard's
    cumulative summaries stand for their last merged one. So the current
    global's sample count and its scaler ``count`` tensor must equal the sum
    over those (the learned weights are not checked: their merge is not a sum).
    """
    url = run.settings.redis_url.get_secret_value()  # type: ignore[union-attr]
    client = redis.Redis.from_url(url)
    raw = client.get(f"{run.settings.redis_prefix}:model:{SPEC}:current")
    client.close()
    if raw is None:
        return ["registry: no current model"]
    current = global_model_from_record(CODEC.decode(raw))
    out = []
    if versions and current.version != max(v.version for v in versions):
        out.append(f"registry current v{current.version} is not the last published version")
    last_cumulative: dict[str, int] = {}
    parts = []
    for (node, seq), (rec, summary) in acked.items():
        if (rec.get("meta") or {}).get("stats") == "cumulative":
            last_cumulative[node] = max(seq, last_cumulative.get(node, 0))
        else:
            parts.append(summary)
    summaries_ = parts + [acked[(n, s)][1] for n, s in last_cumulative.items()]
    want_n = sum(s.n_samples for s in summaries_)
    if current.summary.n_samples != want_n:
        out.append(f"registry n_samples {current.summary.n_samples} != acknowledged {want_n}")
    algebra, feats = get_spec(SPEC).algebra, current.summary.features
    if "count" in current.summary.tensors and summaries_:
        want = sum(algebra.align(s, feats).tensor("count") for s in summaries_)
        if not np.array_equal(current.summary.tensor("count"), want):
            out.append("registry count tensor != the sum over acknowledged summaries")
    return out


def checkpoints(run: Run) -> tuple[list[str], int]:
    """Each partition's checkpoint equals the uninterrupted in-process replay (1e-9)."""
    url = run.settings.redis_url.get_secret_value()  # type: ignore[union-attr]
    client = redis.Redis.from_url(url)
    out, learned = [], 0
    for p, ref in reference_models(run.settings).items():
        raw = client.get(f"{run.settings.redis_prefix}:checkpoint:{run.group}:{p}")
        if raw is None:
            out.append(f"partition {p}: no checkpoint")
            continue
        cp = CODEC.decode(raw, expected="CentralCheckpoint")
        try:
            assert_checkpoint_matches(cp, ref)
        except AssertionError as e:
            out.append(f"partition {p}: checkpoint != uninterrupted replay: {str(e)[:300]}")
        learned += cp["counters"].get("learned", 0)
    client.close()
    return out, learned


def dead_letters(run: Run, boot: str) -> list[str]:
    out = []
    dead = decoded(boot, run.settings.topic("dead-letter"))
    if dead:
        reasons = Counter(r.get("reason_code", r.get("reason")) for _p, _o, r in dead)
        out.append(f"{len(dead)} dead letters for well-formed records: {dict(reasons)}")
    for node, (_log, home) in run.edges.items():
        path = home / "dead-letters.jsonl"
        if path.exists() and path.read_text().strip():
            n = len(path.read_text().splitlines())
            out.append(f"edge {node}: {n} dead letters in {path}")
    return out


def check(run: Run) -> tuple[list[str], dict[str, int]]:
    """Every violation found, and figures of the run (scores, repeats, versions, learned)."""
    boot = run.settings.kafka_bootstrap or ""
    scores = [r for _p, _o, r in decoded(boot, run.settings.topic("scores"))]
    v_central, central_repeats = central_scores(run, scores)
    v_edges, edge_repeats = edge_scores(run, scores)
    v_sum, acked, versions = summaries(run, boot)
    v_cp, learned = checkpoints(run)
    violations = [*v_central, *v_edges, *v_sum, *v_cp]
    violations += registry(run, acked, versions) + dead_letters(run, boot)
    events = len(event_ids(run.central_log))
    if learned != events:
        violations.append(f"central learned {learned} events, the log has {events}")
    figures = {
        "scores": len(scores),
        "central_repeats": central_repeats[0],
        "central_repeats_other_score": central_repeats[1],
        "edge_repeats": edge_repeats[0],
        "edge_repeats_other_score": edge_repeats[1],
        "summaries_merged": len(acked),
        "versions": len(versions),
        "learned": learned,
    }
    return violations, figures
