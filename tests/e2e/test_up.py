"""`prism up --edges 3` on a stack of its own: scores for every event, a global model
with all three edges as contributors, every summary and global signed with the services'
own Ed25519 keys (a stranger's summary refused), and a `prism down` that leaves nothing
behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from helpers.services import decoded

from prism.commands.up import SERVICE_KEYS
from runtime.model_registry import RegistryClient, RegistryKeys
from schemas.eventlog import read_events
from schemas.identity import KeyVerifier, load_trust_file

pytestmark = pytest.mark.e2e


def prism(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prism.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def stack_env(state: Path) -> dict[str, str]:
    lines = (state / "stack.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_up_with_three_edges_scores_every_event_merges_all_three_and_downs_cleanly(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_STATE_DIR"] = str(state)
    log = tmp_path / "fraud.avro"
    assert prism(env, "datagen", "fraud", "--events", "3000", "--sites", "3", "--regions", "1",
                 "--labels", "inline", "--out", str(log)).returncode == 0  # fmt: skip
    up = prism(env, "up", "--edges", "3", "--data", str(log), "--edge-rate", "400")
    try:
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        for name in ("central-fraud", "merger", "edge-0", "edge-1", "edge-2"):
            assert name in up.stdout
        ps = prism(env, "ps")
        assert ps.returncode == 0 and "central-fraud" in ps.stdout and "running" in ps.stdout
        ps_json = prism(env, "ps", "--json")
        assert ps_json.returncode == 0, ps_json.stderr
        rows = {r["name"]: r for r in json.loads(ps_json.stdout)}
        assert set(rows) == {"central-fraud", "merger", "edge-0", "edge-1", "edge-2"}
        assert rows["merger"]["metrics_port"] == 9302 and rows["merger"]["state"] == "running"
        assert all(set(r) == set(SERVICE_KEYS) and r["pid"] for r in rows.values())
        replay = prism(env, "replay", str(log), "--no-progress")
        assert replay.returncode == 0, replay.stderr[-2000:]
        stack = stack_env(state)
        client = RegistryClient(stack["PRISM_REDIS_URL"], keys=RegistryKeys())
        deadline, contributors = time.monotonic() + 180, set()
        while time.monotonic() < deadline and contributors != {"edge-0", "edge-1", "edge-2"}:
            try:
                history = client.history("fraud-linear")
                contributors = {c["node_id"] for v in history for c in v["contributors"]}
                contributors &= {"edge-0", "edge-1", "edge-2"}
            except Exception:  # noqa: BLE001 - not there yet
                pass
            time.sleep(1)
        assert contributors == {"edge-0", "edge-1", "edge-2"}
        _signed_by_default(env, stack, state)
        merger = urllib.request.urlopen("http://127.0.0.1:9302/metrics", timeout=5).read().decode()
        rounds = re.search(r'^prism_merge_rounds_total\{model="fraud-linear",service="merger"\} '
                           r"([0-9.]+)$", merger, re.M)  # fmt: skip
        assert rounds and float(rounds.group(1)) >= 1
        assert re.search(r'^prism_model_version\{model="fraud-linear",service="merger"\} [1-9]',
                         merger, re.M)  # fmt: skip
        status = prism(env, "status")
        assert status.returncode == 0, status.stderr
        assert "kafka ok" in status.stdout and "merger" in status.stdout
        assert "fraud-linear" in status.stdout
        whole = json.loads(prism(env, "status", "--json").stdout)
        assert {r["name"] for r in whole["services"]} == set(rows)
        assert "fraud-linear" in {m["name"] for m in whole["models"]}
        events = {e.record["event_id"] for e in read_events(log) if e.record_type != "Label"}
        scored = _scores(stack["PRISM_KAFKA_BOOTSTRAP"], len(events))
        assert set(scored["central"]) == events  # the central learner scored every event
        assert set(scored["edge"]) == events  # and every event was scored at its edge
        central = b""
        for _ in range(60):  # lag is reported once the worker has fetched the end offsets
            central = urllib.request.urlopen("http://127.0.0.1:9301/metrics", timeout=5).read()
            if b"prism_consumer_lag_records{" in central:
                break
            time.sleep(0.5)
        assert b"prism_consumer_lag_records{" in central and b"prism_events_total{" in central
    finally:
        services = json.loads((state / "up" / "services.json").read_text())
        supervisor = int((state / "up" / "supervisor.pid").read_text())
        down = prism(env, "down")
    assert down.returncode == 0, down.stderr
    pids = [supervisor] + [s["pid"] for s in services if s["pid"]]
    assert len(pids) == 6
    assert [p for p in pids if Path(f"/proc/{p}").exists() and _not_zombie(p)] == []
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left: {leftovers.stdout}"
    assert not (state / "stack.env").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(stack["PRISM_REDIS_URL"], socket_connect_timeout=1).ping()


def _signed_by_default(env: dict, stack: dict[str, str], state: Path) -> None:
    """The registry's global is the merger's, by the trust file `prism up` wrote (and the
    CLI finds it in stack.env); a summary signed by a key it does not list is refused."""
    keys = state / "up" / "keys"
    assert Path(stack["PRISM_TRUST_FILE"]) == keys / "trust.json"
    pems = sorted(keys.glob("*.pem"))
    assert [p.stem for p in pems] == ["central-fraud", "edge-0", "edge-1", "edge-2", "merger"]
    assert {oct(p.stat().st_mode & 0o777) for p in pems} == {"0o600"}
    trust = load_trust_file(keys / "trust.json")
    client = RegistryClient(stack["PRISM_REDIS_URL"], keys=RegistryKeys())
    current = client.get_model("fraud-linear", verify=False)
    assert current["key_id"] == "merger"
    assert KeyVerifier(trust, contract="GlobalModel", required=True).check(current)
    show = prism(env, "models", "show", "fraud-linear")
    assert show.returncode == 0 and "verified:merger" in show.stdout, show.stdout + show.stderr
    where = _produce_stranger(stack["PRISM_KAFKA_BOOTSTRAP"])
    deadline, dead = time.monotonic() + 60, []
    while time.monotonic() < deadline and not dead:
        dead = [r for _p, _o, r in decoded(stack["PRISM_KAFKA_BOOTSTRAP"], "prism.dead-letter")
                if (r["topic"], r["partition"], r["offset"]) == where]  # fmt: skip
        time.sleep(1)
    assert [(d["reason_code"], d["service"]) for d in dead] == [("unknown-key", "merger")]


def _produce_stranger(bootstrap: str) -> tuple[str, int, int]:
    """A well-formed summary for edge-0 signed by a key no trust file lists; where it landed."""
    from confluent_kafka import Producer

    from models.serialization import weight_summary_record
    from models.specs import get_spec
    from schemas import Codec
    from schemas.identity import KeySigner, generate_private_key

    spec = get_spec("fraud-linear")
    model = spec.new_model()
    spec.learn_one(model, {"amount": 3.0, "hour": 12.0}, True)
    summary = spec.summarize(model).with_provenance(
        node_id="edge-0", sequence=2**53, base_version=0
    )
    record = weight_summary_record(summary, tier="edge", created_at_ms=int(time.time() * 1000))
    stranger = KeySigner("stranger", generate_private_key())
    value = Codec().encode("WeightSummary", stranger.sign(record))
    landed: list[tuple[str, int, int]] = []

    def delivered(err: object, m: object) -> None:
        assert err is None, err
        landed.append((m.topic(), m.partition(), m.offset()))  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce("prism.model-updates", value, key=b"edge-0", on_delivery=delivered)
    assert producer.flush(30) == 0 and len(landed) == 1
    return landed[0]


def _scores(bootstrap: str, n: int) -> dict[str, set[str]]:
    from confluent_kafka import Consumer

    from schemas import Codec

    codec = Codec()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe(["prism.scores"])
    out: dict[str, set[str]] = {"central": set(), "edge": set()}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and min(len(v) for v in out.values()) < n:
        for m in consumer.consume(5000, timeout=1.0):
            if m.error() is None:
                r = codec.decode(m.value())
                out["central" if r["source"] == "central" else "edge"].add(r["event_id"])
    consumer.close()
    return out


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
