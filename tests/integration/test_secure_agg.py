"""Secure aggregation on the real local stack: edges in secure mode, one killed mid-round.

Real broker and Redis, real ``prism merger run --secure-agg`` and ``prism
edge run --secure-agg`` processes, each node signing its steps with its own
Ed25519 key and the merger checking them against the trust file; the merger
signs its phase records with its global key and every node checks those
(forged ones on the real broker are refused, into the nodes' dead letters).

What the test checks it computes itself: each node's increment is read from
that node's own outbox (the SQLite file the agent wrote before any round),
and the expected global is clear FedAvg (``models.merge.merge``) of the
survivors' increments. The merger never sees those increments in the clear;
it publishes what it unmasked from the masked sum.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from helpers.services import read_topic, service_env, wait_for_log

from models.merge import merge
from models.packing import LayoutBook, layout_of
from models.serialization import global_model_from_record, summary_from_weight_record
from models.specs import get_spec
from prism.cli import main
from runtime.secagg import keys_record, routed_partition
from runtime.settings import Settings
from schemas import Codec
from schemas.identity import (
    KeySigner,
    generate_private_key,
    load_private_key,
    trust_entry,
    write_private_key,
    write_trust_file,
)

pytestmark = pytest.mark.integration
CODEC = Codec()
SPEC = get_spec("fraud-linear")
HELPER = Path(__file__).parents[1] / "helpers" / "secagg_edge.py"
NODES = ("a", "b", "c", "d", "e", "f", "g")
#: fixed point: each value rounded by at most 2^-41, a sum of m by m times that; the
#: divisions by counts of ~300 events shrink it. 1e-9 is far above, and far below a float32.
CLOSE = 1e-9


def identities(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """Every node's key, and the merger's (``merger``: trusted for ``global:*``)."""
    keys = {v: generate_private_key() for v in (*NODES, "merger")}
    files = {}
    for v, k in keys.items():
        files[v] = tmp_path / "keys" / f"{v}.pem"
        write_private_key(files[v], k)
    trust = {f"{v}-k1": trust_entry(k, ["global:*" if v == "merger" else v], "2999-01-01")
             for v, k in keys.items()}  # fmt: skip
    write_trust_file(tmp_path / "trust.json", trust)
    return tmp_path / "trust.json", files


def launch(settings: Settings, tmp_path: Path, args: list[str], name: str,
           env: dict[str, str], helper: bool = False) -> subprocess.Popen:  # fmt: skip
    log = tmp_path / f"{name}.log"
    cmd = [sys.executable, str(HELPER)] if helper else [sys.executable, "-m", "prism.cli"]
    proc = subprocess.Popen(
        [*cmd, *args],
        env=service_env(settings)
        | {"PRISM_REDIS_PREFIX": settings.redis_prefix}
        | env
        | {"PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def fraud_log(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"fraud-{seed}.avro"
    args = ["datagen", "fraud", "--events", "300", "--sites", "1", "--regions", "1",
            "--seed", str(seed), "--fraud-rate", "0.1", "--labels", "inline",
            "--out", str(path)]  # fmt: skip
    assert main(args) == 0
    return path


def rows(tmp_path: Path, node: str) -> list[tuple[int, bytes, int | None]]:
    db = sqlite3.connect(tmp_path / node / "outbox.sqlite3")
    try:
        return db.execute(
            "SELECT sequence, payload, sent_ms FROM outbox ORDER BY sequence"
        ).fetchall()
    finally:
        db.close()


def increment(tmp_path: Path, node: str, held=None):
    """The node's one increment (cut at the end of its log), as it stored it; a node that
    adopted ``held`` (a global) names that global's layout by id."""
    [(_seq, payload, _sent)] = rows(tmp_path, node)
    book = LayoutBook()
    if held is not None:
        book.learn(layout_of(held))
    return summary_from_weight_record(CODEC.decode(payload, expected="WeightSummary"), book)


def close_to(got, want) -> float:
    got = SPEC.algebra.align(got, want.features)
    np.testing.assert_array_equal(got.tensor("count"), want.tensor("count"))
    gap = max(float(np.max(np.abs(got.tensor(t) - want.tensor(t))))
              for t in ("weights", "intercept", "mean", "var"))  # fmt: skip
    assert gap <= CLOSE, gap
    return gap


def wait_until(what, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"not seen in {timeout} s: {what}")


def globals_on(bootstrap: str, topic: str) -> list:
    """Every version on the global-model topic, decoded as a node does (layouts by id from
    the whole records before them), one per version, in order."""
    book, out = LayoutBook(), {}
    for _p, _o, key, value in sorted(read_topic(bootstrap, topic), key=lambda r: (r[1], r[0])):
        record = CODEC.decode(value, expected="GlobalModel")
        if key.endswith(b"@whole") or record["version"] not in out:
            info = global_model_from_record(record, book)
            book.learn(layout_of(info.summary))
            out[info.version] = info
    return [out[v] for v in sorted(out)]


def secure_merger(  # noqa: PLR0913 - the test's stack
    settings: Settings, tmp_path: Path, topics: dict[str, str], trust: Path,
    keyfiles: dict[str, Path], round_size: str, *extra: str,
) -> subprocess.Popen:  # fmt: skip
    """``prism merger run --secure-agg`` signing its phase records with the merger's key and
    checking the nodes' steps against the trust file."""
    return launch(settings, tmp_path, [
        "merger", "run", "--secure-agg", *extra, "--round-size", round_size, "--round-timeout",
        "5", "--secure-step-timeout", "4", "--min-participants", "2", "--quantize", "float64",
        "--deltas", "off", "--group", f"m-{topics['secagg-rounds']}",
    ], "merger", {"PRISM_TRUST_FILE": str(trust), "PRISM_SIGNING_KEY_FILE": str(
        keyfiles["merger"]), "PRISM_SIGNING_KEY_ID": "merger-k1"})  # fmt: skip


def version_one(bootstrap: str, topics: dict[str, str], tmp_path: Path, nodes: str):
    """The first global, checked to hold exactly ``nodes``' increments (from their outboxes);
    returns it and those increments."""
    [v1] = wait_until("version 1", lambda: globals_on(bootstrap, topics["global-model"]))
    incs = {v: increment(tmp_path, v) for v in nodes}
    assert sorted((c.node_id, c.sequence) for c in v1.contributors) == sorted(
        (v, s.sequence) for v, s in incs.items()
    )
    return v1, incs


def routed_only_to_own_partition(settings: Settings, topics: dict[str, str], tmp_path: Path,
                                 procs: dict[str, subprocess.Popen]) -> dict[str, int]:  # fmt: skip
    """Each node fetched no routed record but those of its own partition of secagg-routed
    (its own, and any node's whose id hashes there), and every routed record sits in its
    receiver's partition. Returns the bytes of round records each node downloaded."""
    parts = settings.secagg_routed_partitions
    for p, _o, key, value in read_topic(settings.kafka_bootstrap or "", topics["secagg-routed"]):
        record = CODEC.decode(value, expected="SecAggRound")
        assert record["phase"] == "input" and list(record["routed"]) == [key.decode()]
        assert p == routed_partition(key.decode(), parts)
    down = {}
    for v, proc in procs.items():
        [(got, to)] = re.findall(  # the node has exited: logged once
            rf"secure rounds read node={v} downloaded_bytes=(\d+) routed_to=([\w,-]*)",
            Path(proc.log_path).read_text(),
        )
        seen = set(filter(None, to.split(",")))
        same = {w for w in procs if routed_partition(w, parts) == routed_partition(v, parts)}
        assert v in seen and seen <= same, (v, seen, same)
        down[v] = int(got)
    return down


def round_records(bootstrap: str, topic: str) -> list[dict]:
    return [CODEC.decode(v) for _p, _o, _k, v in read_topic(bootstrap, topic)]


def test_secure_rounds_on_the_real_stack_survive_a_kill_and_abandon_beyond_the_threshold(
    test_settings: Settings, prism_topics: dict[str, str], tmp_path: Path
) -> None:
    # a registry of its own: other tests' fraud-linear versions must not number these
    test_settings = test_settings.model_copy(update={"redis_prefix": f"t{uuid.uuid4().hex[:8]}"})
    bootstrap = test_settings.kafka_bootstrap or ""
    trust, keyfiles = identities(tmp_path)

    def edge(node: str, seed: int, *, stall: bool = False) -> subprocess.Popen:
        args = ["edge", "run", "--node", node, "--source", str(fraud_log(tmp_path, seed)),
                "--state-dir", str(tmp_path / node), "--summary-every", "100000",
                "--drain-timeout", "150", "--secure-agg"]  # fmt: skip
        env = {
            "PRISM_SIGNING_KEY_FILE": str(keyfiles[node]),
            "PRISM_SIGNING_KEY_ID": f"{node}-k1",
            "PRISM_TRUST_FILE": str(trust),
        }  # the merger's phase records: checked
        return launch(test_settings, tmp_path, args, node, env, helper=stall)

    # -- round 1: four nodes, d shares its keys and is killed before its masked input --------
    procs = {v: edge(v, i + 1, stall=v == "d") for i, v in enumerate("abcd")}
    for proc in procs.values():  # up and waiting for a round: they all join the first one
        wait_for_log(proc, "edge agent running", timeout=120)
    merger = secure_merger(test_settings, tmp_path, prism_topics, trust, keyfiles, "4")
    wait_for_log(procs["d"], "stalled before masked input", timeout=120)
    procs["d"].send_signal(signal.SIGKILL)
    procs["g"] = edge("g", 7, stall=True)  # starts while round 1 ends: joins round 2, first
    for v in "abc":
        assert procs[v].wait(150) == 0, Path(procs[v].log_path).read_text()[-3000:]
    v1, incs = version_one(bootstrap, prism_topics, tmp_path, "abc")
    downloaded = routed_only_to_own_partition(
        test_settings, prism_topics, tmp_path, {v: procs[v] for v in "abc"}
    )
    gap1 = close_to(v1.summary, merge(list(incs.values()), "fedavg").summary)
    assert all(sent is not None for v in "abc" for _s, _p, sent in rows(tmp_path, v))
    assert [sent for _s, _p, sent in rows(tmp_path, "d")] == [None]  # d's increment: kept

    # -- round 2: three nodes, g killed mid-round: beyond the threshold, abandoned -----------
    wait_for_log(procs["g"], "secure round joined", timeout=120)
    procs |= {v: edge(v, i + 5) for i, v in enumerate("ef")}
    wait_for_log(procs["g"], "stalled before masked input", timeout=120)
    procs["g"].send_signal(signal.SIGKILL)
    for v in "ef":  # their increments go again, to round 3, and are merged there
        assert procs[v].wait(150) == 0, Path(procs[v].log_path).read_text()[-3000:]
    versions = wait_until(
        "version 2",
        lambda: [
            x for x in globals_on(bootstrap, prism_topics["global-model"]) if x.version == 2
        ],  # fmt: skip
    )
    records = round_records(bootstrap, prism_topics["secagg-rounds"])
    abandoned = [r for r in records if r["phase"] == "abandoned"]
    # g joined first; e and/or f came while its round took keys, the other the next one
    [gone] = abandoned
    n = len(gone["nodes"])
    assert "g" in gone["nodes"] and set(gone["nodes"]) <= {"e", "f", "g"} and n >= 2
    assert f"masked input: {n - 1} of {n} nodes left, the round needs {n}" in gone["reason"]
    done = [r for r in records if r["phase"] == "done"]
    assert [(sorted(r["nodes"]), r["version"]) for r in done] == [
        (["a", "b", "c"], 1), (["e", "f"], 2)
    ]  # fmt: skip
    all_versions = [x.version for x in globals_on(bootstrap, prism_topics["global-model"])]
    assert all_versions == [1, 2]  # the abandoned round published nothing
    [v2] = versions
    incs2 = {v: increment(tmp_path, v, v1.summary) for v in "ef"}
    assert sorted((c.node_id, c.sequence) for c in v2.contributors) == sorted(
        (v, s.sequence) for v, s in incs2.items()
    )  # the very increments of the abandoned round: re-offered, merged once
    clear = merge(list(incs2.values()), "fedavg", current=v1.summary, accumulate=True)
    gap2 = close_to(v2.summary, clear.summary)
    assert [sent for _s, _p, sent in rows(tmp_path, "g")] == [None]  # g's: kept, not lost

    open_round = records[-1]
    assert open_round["phase"] == "keys"
    # meanwhile the two killed nodes restart: each was a dropout, its increment still offered
    again = {v: edge(v, seed) for v, seed in (("d", 4), ("g", 7))}  # normal agents now
    producer = Producer({"bootstrap.servers": bootstrap})

    # -- forged merger phase records: the restarted nodes act on none of them ------------------
    fake = {"round_id": "fraud-linear/1/999", "model_name": "fraud-linear", "phase": "done",
            "nodes": ["d", "g"], "version": 99, "created_at": 1, "max_dropout": 0.3,
            "key_id": None, "signature": None}  # fmt: skip
    by_node_key = KeySigner("a-k1", load_private_key(keyfiles["a"])).sign(fake, "SecAggRound")
    by_stranger = KeySigner("merger-k1", generate_private_key()).sign(fake, "SecAggRound")
    for record in (fake, by_node_key, by_stranger):
        producer.produce(prism_topics["secagg-rounds"], CODEC.encode("SecAggRound", record),
                         key=b"fraud-linear")  # fmt: skip
    producer.flush(10)  # written before the nodes read the rounds topic from its start

    def refused(node: str):
        path = tmp_path / node / "dead-letters.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        codes = sorted(d["reason_code"] for d in map(json.loads, lines)
                       if (d["where"] or {}).get("round_id") == fake["round_id"])  # fmt: skip
        return codes if len(codes) >= 3 else None

    # -- bad step records: dead letters with reasons, the merger goes on ------------------------
    key_a = generate_private_key()  # not a's key in the trust file
    ad_a = keys_record(open_round["round_id"], _advert("a"), model_name="fraud-linear",
                       sequence=9, base_version=0, features=["x"], now_ms=1)  # fmt: skip
    unsigned = dict(ad_a, key_id=None, signature=None)
    forged = KeySigner("a-k1", key_a).sign(unsigned, "SecAggKeys")
    wrong_node = KeySigner("b-k1", load_private_key(keyfiles["b"])).sign(unsigned, "SecAggKeys")
    first_a = [
        v for _p, _o, k, v in read_topic(bootstrap, prism_topics["secagg-keys"]) if k == b"a"
    ]
    for record in (unsigned, forged, wrong_node):
        producer.produce(prism_topics["secagg-keys"], CODEC.encode("SecAggKeys", record), key=b"a")
    producer.produce(prism_topics["secagg-keys"], first_a[0], key=b"a")  # round 1's, again
    producer.flush(10)

    def reasons():
        dead = [
            CODEC.decode(v) for _p, _o, _k, v in read_topic(bootstrap, prism_topics["dead-letter"])
        ]
        codes = sorted(d["reason_code"] for d in dead if d["topic"] == prism_topics["secagg-keys"])
        return codes if len(codes) >= 4 else None

    assert wait_until("dead letters", reasons, 60) == [
        "bad-signature", "key-not-for-node", "replayed", "unsigned"
    ]  # fmt: skip
    assert merger.poll() is None  # bad records never crash it

    for v in "dg":
        assert wait_until(f"{v} refuses", lambda v=v: refused(v), 90) == [
            "bad-signature", "key-not-for-node", "unsigned"
        ]  # fmt: skip

    # -- the two restarted nodes' increments: merged once, in the next round ------------------
    for proc in again.values():
        assert proc.wait(150) == 0, Path(proc.log_path).read_text()[-3000:]
    v3 = wait_until("version 3", lambda: [x for x in globals_on(bootstrap, prism_topics[
        "global-model"]) if x.version == 3])[0]  # fmt: skip
    stored = {v: dict((q, p) for q, p, _t in rows(tmp_path, v)) for v in "dg"}
    assert {c.node_id for c in v3.contributors} == {"d", "g"}
    book = LayoutBook()
    book.learn(layout_of(v1.summary))
    incs3 = [
        summary_from_weight_record(
            CODEC.decode(stored[c.node_id][c.sequence], expected="WeightSummary"), book
        )
        for c in v3.contributors
    ]
    gap3 = close_to(v3.summary, merge(incs3, "fedavg", current=v2.summary, accumulate=True).summary)
    assert all(t is not None for v in "dg" for _q, _p, t in rows(tmp_path, v))  # none lost
    merger.send_signal(signal.SIGTERM)
    merger.wait(30)
    log = Path(merger.log_path).read_text()  # type: ignore[attr-defined]
    sizes = [line for line in log.splitlines() if "secure round unmasked" in line]
    print(json.dumps({"gap_v1": gap1, "gap_v2": gap2, "gap_v3": gap3, "rounds": sizes,
                      "downloaded_round_1": downloaded}, indent=1))  # fmt: skip


def _advert(node: str):
    from models.secagg.messages import Advertise
    from models.secagg.node import NodeKeys

    k = NodeKeys.generate()
    return Advertise(node, k.cipher.public, k.mask.public)


def iot_log(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"iot-{seed}.avro"
    args = ["datagen", "iot", "--events", "400", "--sites", "1", "--regions", "1",
            "--seed", str(seed), "--labels", "inline", "--out", str(path)]  # fmt: skip
    assert main(args) == 0
    return path


def test_iot_gauss_secure_round_on_the_real_stack_and_a_merged_row_whose_marker_was_lost(
    test_settings: Settings, prism_topics: dict[str, str], tmp_path: Path
) -> None:
    """Three iot-gauss edges: the merger rebuilds count, mean and covariance from the masked
    sum. Then one node loses the bookkeeping of its merged row (its outbox row unsent again,
    no marker): restarted, it learns from the round's signed records that the row was merged,
    marks it sent and never offers it again (no ``duplicate`` refusal)."""
    test_settings = test_settings.model_copy(update={"redis_prefix": f"t{uuid.uuid4().hex[:8]}"})
    bootstrap = test_settings.kafka_bootstrap or ""
    trust, keyfiles = identities(tmp_path)
    gauss = get_spec("iot-gauss")

    def edge(node: str, seed: int, drain: str = "150") -> subprocess.Popen:
        args = ["edge", "run", "--node", node, "--source", str(iot_log(tmp_path, seed)),
                "--task", "iot", "--model", "iot-gauss", "--state-dir", str(tmp_path / node),
                "--summary-every", "100000", "--drain-timeout", drain, "--secure-agg"]  # fmt: skip
        env = {"PRISM_SIGNING_KEY_FILE": str(keyfiles[node]), "PRISM_SIGNING_KEY_ID":
               f"{node}-k1", "PRISM_TRUST_FILE": str(trust)}  # fmt: skip
        return launch(test_settings, tmp_path, args, node, env)

    procs = {v: edge(v, 11 + i) for i, v in enumerate("abc")}
    for proc in procs.values():
        wait_for_log(proc, "edge agent running", timeout=120)
    merger = secure_merger(test_settings, tmp_path, prism_topics, trust, keyfiles, "3",
                           "--secure-model", "iot-gauss")  # fmt: skip
    for v in "abc":
        assert procs[v].wait(150) == 0, Path(procs[v].log_path).read_text()[-3000:]
    v1, incs = version_one(bootstrap, prism_topics, tmp_path, "abc")
    downloaded = routed_only_to_own_partition(test_settings, prism_topics, tmp_path, procs)
    clear = merge(list(incs.values()), "exact").summary
    got = gauss.algebra.align(v1.summary, clear.features)
    assert got.n_samples == clear.n_samples == sum(s.n_samples for s in incs.values())
    gaps = {t: float(np.max(np.abs(got.tensor(t) - clear.tensor(t)) / (1 + np.abs(
        clear.tensor(t))))) for t in ("mean", "cov")}  # fmt: skip
    assert max(gaps.values()) <= CLOSE, gaps

    # -- a's merged row loses its bookkeeping: unsent again, and no restart marker -------------
    db = sqlite3.connect(tmp_path / "a" / "outbox.sqlite3")
    with db:
        db.execute("UPDATE outbox SET sent_ms = NULL")
    db.close()
    assert not (tmp_path / "a" / "secagg-round.json").exists()
    again = edge("a", 11, drain="60")
    assert again.wait(120) == 0, Path(again.log_path).read_text()[-3000:]
    log_a = Path(again.log_path).read_text()
    assert "merged before, marked sent from the round's records" in log_a
    assert "secure round joined" not in log_a.split("edge agent running")[-1]  # never offered
    assert all(sent is not None for _s, _p, sent in rows(tmp_path, "a"))
    dead = [CODEC.decode(v) for _p, _o, _k, v in read_topic(bootstrap, prism_topics["dead-letter"])]
    assert not [d for d in dead if d["reason_code"] == "duplicate"]
    assert [x.version for x in globals_on(bootstrap, prism_topics["global-model"])] == [1]
    merger.send_signal(signal.SIGTERM)
    merger.wait(30)
    log = Path(merger.log_path).read_text()  # type: ignore[attr-defined]
    sizes = [line for line in log.splitlines() if "secure round unmasked" in line]
    print(json.dumps({"gaps_v1": gaps, "rounds": sizes, "downloaded": downloaded}, indent=1))
