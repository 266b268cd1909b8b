"""#10.6: fuzz every decoder of untrusted bytes with >= 100,000 inputs each.

A seeded mutation loop over valid encodings (bit flips, byte sets, truncation,
extension, splicing of two messages, deleted/duplicated ranges, inserted
random Avro varints i.e. hostile length prefixes) drives each decoder; the
only allowed outcomes are a valid record or the project's own decode error --
never another exception type, never a hang (slowest input timed), never a
huge allocation (peak RSS growth bounded). Hypothesis adds a structured run
(random records, random bytes) at a bounded example count.

Decoders: ``Codec.decode_any`` of every schema from Avro and JSON seeds; what
the merger runs on a WeightSummary (decode, signature check, summary rebuild,
spec check); what an edge runs on a GlobalModel (decode + rebuild); what an
edge topic source runs (decode + semantic checks); the event-log readers
(JSON Lines and Avro container files).

``PRISM_FUZZ_INPUTS`` scales the per-decoder count (default 100,000; the
tests assert they ran at least that many).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from helpers.avro_strategies import from_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import corpus

from models.errors import ModelError
from models.serialization import (
    global_model_from_record,
    global_model_record,
    summary_from_weight_record,
    weight_summary_record,
)
from models.specs import get_spec
from schemas import SCHEMA_NAMES, Codec, SchemaError
from schemas.codec import load_schema
from schemas.eventlog import EventLogError, RecordChecker, open_writer, read_events
from schemas.signing import SignatureError, Signer, TrustedKey, Verifier

N = int(os.environ.get("PRISM_FUZZ_INPUTS", "100000"))
MAX_BYTES = 1_048_576
CODEC = Codec(max_bytes=MAX_BYTES)
SLOWEST_S = 2.0  # one input taking longer is a hang
RSS_GROWTH_MB = 300  # ru_maxrss may grow this much over a whole run, no more


# -- valid seeds -----------------------------------------------------------------------
def hypothesis_records(name: str, n: int = 12) -> list[dict[str, Any]]:
    """A few valid records of ``name``, drawn by hypothesis (deterministic: derandomized)."""
    out: list[dict[str, Any]] = []

    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(from_schema(load_schema(name)))
    def collect(record: dict[str, Any]) -> None:
        out.append(record)

    collect()
    return out


SPEC = get_spec("fraud-linear")
SIGNER = Signer("k1", "0123456789abcdef0123")
# not required (a migration): unsigned summaries pass, a signed one must verify
VERIFIER = Verifier({"k1": TrustedKey("0123456789abcdef0123", ("n*",))}, required=False)


def _summary(node: str = "n1", seed: int = 1):
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(20):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4))
    return SPEC.summarize(model).with_provenance(node_id=node, sequence=seed, base_version=0)


def weight_summaries() -> list[dict[str, Any]]:
    plain = weight_summary_record(_summary(), tier="edge", created_at_ms=1, metrics={"auc": 0.5})
    int8 = weight_summary_record(_summary("n2", 2), tier="edge", created_at_ms=2, quantize="int8")
    return [plain, SIGNER.sign(plain), int8]


def global_models() -> list[dict[str, Any]]:
    return [global_model_record(_summary(), version=3, strategy="fedavg", created_at_ms=5)]


def seeds(name: str) -> list[dict[str, Any]]:
    """Valid records: realistic ones where Prism builds them, plus hypothesis draws."""
    real = {
        "Transaction": [corpus.transaction("e1"), corpus.transaction("e2", label=True)],
        "SensorReading": [corpus.sensor_reading("s1")],
        "Label": [corpus.label("e1")],
        "WeightSummary": weight_summaries(),
        "GlobalModel": global_models(),
    }.get(name, [])
    return real + hypothesis_records(name)


# -- mutations ------------------------------------------------------------------------
def _varint(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, -1, 2**31, -(2**31), 2**62, -(2**62), 2**63 - 1, rng.getrandbits(40)])
    return corpus.zigzag_varint(n)


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """One to three random edits of ``data``."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(9)
        n = len(b)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # interesting bytes
            b[rng.randrange(n)] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC3, 0x22, 0x7B))
        elif op == 2:  # truncate
            del b[rng.randint(0, n) :]
        elif op == 3:  # extend with noise
            b += rng.randbytes(rng.randint(1, 16))
        elif op == 4 and others:  # splice two messages
            other = rng.choice(others)
            b = b[: rng.randint(0, n)] + other[rng.randint(0, len(other)) :]
        elif op == 5 and n:  # delete a range
            i = rng.randrange(n)
            del b[i : i + rng.randint(1, 8)]
        elif op == 6 and n:  # duplicate a range
            i = rng.randrange(n)
            b[i:i] = b[i : i + rng.randint(1, 16)]
        elif op == 7:  # a hostile varint (length prefix, block count, union index) somewhere
            i = rng.randint(0, n)
            b[i : i + rng.randint(0, 2)] = _varint(rng)
        elif op == 8 and n:  # random bytes over a range
            i = rng.randrange(n)
            k = rng.randint(1, 8)
            b[i : i + k] = rng.randbytes(k)
    return bytes(b)


class Outcome:
    def __init__(self) -> None:
        self.inputs = self.ok = self.errors = 0
        self.slowest = 0.0


def drive(
    decode: Callable[[bytes], Any],
    allowed: tuple[type[BaseException], ...],
    valid: list[bytes],
    n: int,
    seed: int,
) -> Outcome:
    """``n`` mutated inputs through ``decode``; anything not ``allowed`` fails the test."""
    rng, out = random.Random(seed), Outcome()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(n):
        data = mutate(rng, rng.choice(valid), valid)
        started = time.perf_counter()
        try:
            decode(data)
            out.ok += 1
        except allowed:
            out.errors += 1
        except Exception as e:  # noqa: BLE001 - the finding: report the input
            raise AssertionError(
                f"input {i} (seed {seed}) raised {type(e).__name__}: {e}; bytes={data.hex()}"
            ) from e
        spent = time.perf_counter() - started
        if spent > out.slowest:
            out.slowest = spent
            assert spent < SLOWEST_S, f"input {i} took {spent:.2f} s; bytes={data[:200].hex()}"
        out.inputs += 1
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < RSS_GROWTH_MB, f"peak RSS grew {grown_mb:.0f} MB"
    assert out.inputs >= n >= 1
    return out


def _check_outcome(out: Outcome, what: str) -> None:
    # a fuzzer that never gets past the first check proves little: some mutants must decode
    assert out.ok > 0 and out.errors > 0, (what, out.ok, out.errors)
    print(f"{what}: {out.inputs} inputs, {out.ok} decoded, {out.errors} refused, "
          f"slowest {out.slowest * 1000:.1f} ms")  # fmt: skip


# -- 1. the codec, every schema, Avro and JSON seeds -------------------------------------------
@pytest.mark.parametrize("mode", ["avro", "json"])
@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_codec_decode_any_yields_a_valid_record_or_a_schema_error(name: str, mode: str) -> None:
    writer = Codec(mode=mode, max_bytes=MAX_BYTES)
    valid = [writer.encode(name, r) for r in seeds(name)]

    def decode(data: bytes) -> None:
        got_name, record = CODEC.decode_any(data)
        # success means a valid record: it encodes again under its own schema
        CODEC.encode(got_name, record)

    out = drive(decode, (SchemaError,), valid, N, seed=zlib.crc32(f"{name}/{mode}".encode()))
    _check_outcome(out, f"{name}/{mode}")


# -- 2. what the merger runs on model-updates ----------------------------------------------
def merger_intake(data: bytes) -> None:
    """streams/merger/loop.py MergerLoop._take + rounds.Merger._check, minus Kafka."""
    record = CODEC.decode(data, expected="WeightSummary")
    VERIFIER.check(record)
    summary = summary_from_weight_record(record)
    get_spec(summary.model_name).algebra.check(summary)


@pytest.mark.parametrize("mode", ["avro", "json"])
def test_merger_summary_verification_refuses_with_its_own_errors(mode: str) -> None:
    writer = Codec(mode=mode)
    valid = [writer.encode("WeightSummary", r) for r in weight_summaries()]
    for v in valid:
        merger_intake(v)  # the seeds pass (the signed one verifies)
    out = drive(merger_intake, (SchemaError, SignatureError, ModelError), valid, N, seed=7)
    _check_outcome(out, f"merger intake/{mode}")


# -- 3. what an edge runs on the global-model feed ------------------------------------------
def edge_global(data: bytes) -> None:
    """edge_agents/globals.py TopicGlobals._decode (it catches ModelError and ValueError)."""
    info = global_model_from_record(CODEC.decode(data, expected="GlobalModel"))
    get_spec(info.summary.model_name).algebra.check(info.summary)


def test_edge_global_model_decoding_refuses_with_its_own_errors() -> None:
    valid = [CODEC.encode("GlobalModel", r) for r in global_models()]
    valid += [Codec(mode="json").encode("GlobalModel", r) for r in global_models()]
    # SchemaError is a ValueError; nothing else of ValueError's family is allowed here
    out = drive(edge_global, (SchemaError, ModelError), valid, N, seed=11)
    _check_outcome(out, "edge global model")


# -- 4. what an edge topic source runs on its local events ----------------------------------
def edge_source(data: bytes) -> None:
    """edge_agents/sources.py TopicSource._decode without its catch-all."""
    rtype, record = CODEC.decode_any(data)
    if rtype in ("Transaction", "SensorReading", "Label"):
        RecordChecker.semantic_problem(rtype, record)


def test_edge_topic_source_decoding_refuses_with_schema_errors() -> None:
    valid = [CODEC.encode("Transaction", r) for r in seeds("Transaction")]
    valid += [Codec(mode="json").encode("Label", corpus.label("e1"))]
    out = drive(edge_source, (SchemaError,), valid, N, seed=13)
    _check_outcome(out, "edge topic source")


# -- 5. the event-log readers -----------------------------------------------------------
def test_jsonl_event_log_reader_reports_every_bad_line(tmp_path: Path) -> None:
    """One file of N mutated lines: each is an event or a BadRecord, never an exception."""
    rng = random.Random(17)
    lines = [
        json.dumps({"type": "Transaction", **corpus.transaction(f"e{i}", label=i % 2 == 0)})
        for i in range(4)
    ] + [json.dumps({"type": "Label", **corpus.label("e1")})]
    valid = [x.encode() for x in lines]
    path = tmp_path / "fuzz.jsonl"
    written = 0
    with path.open("wb") as fo:
        for _ in range(N):
            line = mutate(rng, rng.choice(valid), valid).replace(b"\n", b" ").replace(b"\r", b" ")
            if line.strip():
                fo.write(line + b"\n")
                written += 1
    bad: list = []
    started = time.perf_counter()
    events = sum(1 for _ in read_events(path, on_error=bad.append))
    assert events + len(bad) == written >= 0.95 * N  # blank mutants are skipped, as blank lines
    assert events > 0 and bad and all(b.reason for b in bad)
    assert time.perf_counter() - started < 120


def test_avro_event_log_reader_never_raises_anything_but_its_own_error(tmp_path: Path) -> None:
    """Mutated container files: events, BadRecords or EventLogError -- nothing else."""
    good = tmp_path / "good.avro"
    with open_writer(good, sync_marker=b"\x01" * 16) as w:
        for i in range(3):
            w.write("Transaction", corpus.transaction(f"e{i}"))
        w.write("Label", corpus.label("e1"))
    valid = [good.read_bytes()]
    path = tmp_path / "fuzz.avro"

    def read(data: bytes) -> None:
        path.write_bytes(data)
        for _ in read_events(path, on_error=lambda bad: None):
            pass

    # a file per input is slow: the same count, but the body of each pass is cheap enough
    out = drive(read, (EventLogError,), valid, N, seed=19)
    _check_outcome(out, "avro event log")


def test_an_avro_log_whose_writer_schema_lacks_the_contract_fields_is_refused(tmp_path):
    """Found by the loop above: records of a foreign writer schema were yielded unchecked
    (a ``Transaction`` without ``amount`` raised KeyError in the reader)."""
    foreign = {"type": "record", "name": "prism.Transaction",
               "fields": [{"name": "event_id", "type": "string"}]}  # fmt: skip
    path = tmp_path / "foreign.avro"
    with path.open("wb") as fo:
        fastavro.writer(fo, foreign, [{"event_id": "e1"}])
    bad: list = []
    try:
        events = list(read_events(path, on_error=bad.append))
    except EventLogError:
        events = []
    assert events == [] and all(b.reason for b in bad)


# -- 6. hypothesis: structured records and raw bytes (bounded, on top of the loops) -------------
@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(SCHEMA_NAMES), st.data())
def test_hypothesis_random_records_with_random_edits(name: str, data: st.DataObject) -> None:
    record = data.draw(from_schema(load_schema(name)))
    encoded = data.draw(
        st.sampled_from([Codec(mode=m).encode(name, record) for m in ("avro", "json")])
    )
    cut = data.draw(st.integers(0, len(encoded)))
    noise = data.draw(st.binary(max_size=16))
    for candidate in (encoded, encoded[:cut], encoded[:cut] + noise + encoded[cut:]):
        with contextlib.suppress(SchemaError):
            CODEC.decode_any(candidate)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.binary(max_size=64), st.sampled_from(["", "\xc3\x01"]))
def test_hypothesis_random_bytes(raw: bytes, head: str) -> None:
    data = head.encode("latin-1") + raw
    for decoder, allowed in [
        (CODEC.decode_any, (SchemaError,)),
        (merger_intake, (SchemaError, SignatureError, ModelError)),
        (edge_global, (SchemaError, ModelError)),
    ]:
        with contextlib.suppress(*allowed):
            decoder(data)


def test_the_default_run_is_at_least_100000_inputs_per_decoder() -> None:
    """The count the loops above use (they each assert they ran it)."""
    assert N >= 100_000 or "PRISM_FUZZ_INPUTS" in os.environ
