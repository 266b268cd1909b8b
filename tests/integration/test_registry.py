"""The Redis registry against the real local Redis: transactions, history, ACL, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from models.merge import merge
from models.serialization import global_model_from_record, global_model_record
from models.specs import get_spec
from runtime.model_registry import (
    NodeRecord,
    RegistryClient,
    RegistryKeys,
    RegistryWriter,
    UnverifiedModelError,
)

pytestmark = pytest.mark.integration


def _merged_record(version: int, nodes: int = 3) -> dict:
    spec = get_spec("fraud-linear")
    rng = np.random.default_rng(version)
    summaries = []
    for i in range(nodes):
        model = spec.new_model()
        for _ in range(40):
            x = {"amount": float(rng.gamma(2, 30)), "hour": float(rng.integers(0, 24))}
            model.learn_one(x, bool(rng.random() < 0.1))
        summaries.append(spec.summarize(model).with_provenance(
            node_id=f"store-{i}", sequence=version, base_version=version - 1))  # fmt: skip
    result = merge(summaries, "fedavg")
    return global_model_record(
        result.summary, version=version, parent_version=version - 1, strategy="fedavg",
        created_at_ms=1_700_000_000_000 + version, contributors=result.contributors,
        excluded=result.excluded,
    )  # fmt: skip


@pytest.fixture
def keys() -> RegistryKeys:
    return RegistryKeys(prefix=f"t{uuid.uuid4().hex[:8]}")


def test_publish_read_history_is_bounded_with_lineage(redis_url: str, keys: RegistryKeys) -> None:
    writer = RegistryWriter(redis_url, history_size=3, keys=keys).setup()
    try:
        for version in range(1, 6):
            nodes = [NodeRecord(f"store-{i}", 1000 + version, version, "fraud-linear")
                     for i in range(3)]  # fmt: skip
            writer.publish_model(_merged_record(version), nodes)
    finally:
        writer.close()
    client = RegistryClient(redis_url, keys=keys)
    current = client.get_model("fraud-linear")
    assert current["version"] == 5
    info = global_model_from_record(current)
    assert info.summary.model_name == "fraud-linear" and info.summary.n_samples > 0
    history = client.history("fraud-linear")
    assert [h["version"] for h in history] == [5, 4, 3]
    assert {c["node_id"] for c in history[0]["contributors"]} == {"store-0", "store-1", "store-2"}
    nodes = client.nodes()
    assert [n["node_id"] for n in nodes] == ["store-0", "store-1", "store-2"]
    assert all(n["last_sequence"] == 5 and n["excluded"] is False for n in nodes)
    assert client.models() == ["fraud-linear"]


def test_model_and_nodes_land_in_one_transaction(redis_url: str, keys: RegistryKeys) -> None:
    """One MULTI/EXEC per publish: readers never see a model without its history or nodes."""
    raw = redis.Redis.from_url(redis_url)
    writer = RegistryWriter(redis_url, keys=keys).setup()

    def execs() -> int:
        return int(raw.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))

    before = execs()
    writer.publish_model(_merged_record(1), [NodeRecord("n1", 1, 1, "fraud-linear")])
    writer.close()
    assert execs() - before == 1
    assert raw.llen(keys.history("fraud-linear")) == 1
    assert raw.sismember(keys.nodes, "n1") and raw.exists(keys.current("fraud-linear"))


def test_query_user_reads_but_cannot_write(
    redis_url: str, redis_query_url: str, keys: RegistryKeys
) -> None:
    writer = RegistryWriter(redis_url, keys=keys).setup()
    writer.publish_model(_merged_record(1))
    writer.close()
    assert RegistryClient(redis_query_url, keys=keys).get_model("fraud-linear")["version"] == 1
    reader_as_writer = RegistryWriter(redis_query_url, keys=keys).setup()
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader_as_writer.publish_model(_merged_record(2))
    reader_as_writer.close()


def _prism(
    tmp_path: Path, redis_query_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env |= {"PRISM_STATE_DIR": str(tmp_path), "PRISM_REDIS_QUERY_URL": redis_query_url, **extra}
    return subprocess.run([sys.executable, "-m", "prism.cli", "models", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_cli_json_matches_what_was_merged(
    tmp_path: Path, redis_url: str, redis_query_url: str
) -> None:
    # the CLI reads the default prefix: use a model name unique to this test
    record = _merged_record(7)
    name = f"fraud-linear-{uuid.uuid4().hex[:6]}"
    record["model_name"] = record["state"]["model_name"] = name
    writer = RegistryWriter(redis_url).setup()
    writer.publish_model(record, [NodeRecord("edge-9", 5, 7, name, excluded=True,
                                             reason="norm outlier")])  # fmt: skip
    writer.close()
    shown = _prism(tmp_path, redis_query_url, "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    parsed = json.loads(shown.stdout)
    assert parsed["version"] == 7 and parsed["state"]["features"] == record["state"]["features"]
    assert [c["node_id"] for c in parsed["contributors"]] == ["store-0", "store-1", "store-2"]
    listed = json.loads(_prism(tmp_path, redis_query_url, "list", "--json").stdout)
    assert any(row["model_name"] == name and row["version"] == 7 for row in listed)
    nodes = json.loads(_prism(tmp_path, redis_query_url, "nodes", "--json").stdout)
    assert {"node_id": "edge-9", "excluded": True, "reason": "norm outlier"}.items() <= next(
        n for n in nodes if n["node_id"] == "edge-9").items()  # fmt: skip
    assert _prism(tmp_path, redis_query_url, "history", name).returncode == 0
    assert _prism(tmp_path, redis_query_url, "show", name).returncode == 0


def test_missing_model_is_a_message_and_exit_code(tmp_path: Path, redis_query_url: str) -> None:
    result = _prism(tmp_path, redis_query_url, "show", "no-such-model")
    assert result.returncode == 3
    assert "no model named 'no-such-model'" in result.stderr and "Traceback" not in result.stderr


def test_models_are_shown_only_when_the_merger_signature_holds(
    tmp_path: Path, redis_url: str, redis_query_url: str
) -> None:
    """Anyone who can write to Redis could put a model in front of every reader: with a
    trust file, `prism models show` refuses what does not verify, `list` and `history`
    mark it UNVERIFIED, and the client raises with the reason."""
    from schemas.identity import KeySigner, generate_private_key, trust_entry

    merger, thief = generate_private_key(), generate_private_key()
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"k-merger": trust_entry(merger, ["global:*"], "2999-01-01")}))
    run = {"PRISM_TRUST_FILE": str(trust)}
    names = {}
    for case in ("good", "unsigned", "forged", "tampered"):
        record = _merged_record(3)
        name = f"fraud-linear-{case}-{uuid.uuid4().hex[:6]}"
        record["model_name"] = record["state"]["model_name"] = name
        if case != "unsigned":
            record = KeySigner("k-merger", thief if case == "forged" else merger).sign(
                record, "GlobalModel"
            )
        if case == "tampered":
            record["strategy"] = "fedmedian"
        writer = RegistryWriter(redis_url).setup()
        writer.publish_model(record, [])
        writer.close()
        names[case] = name
    shown = _prism(tmp_path, redis_query_url, "show", names["good"], env=run)
    assert shown.returncode == 0, shown.stderr
    assert "signature      verified:k-merger" in shown.stdout
    for case, code in (("unsigned", "unsigned"), ("forged", "bad-signature"),
                       ("tampered", "bad-signature")):  # fmt: skip
        refused = _prism(tmp_path, redis_query_url, "show", names[case], "--json", env=run)
        assert refused.returncode == 4 and refused.stdout == ""
        assert f"UNVERIFIED model '{names[case]}'" in refused.stderr and code in refused.stderr
        assert "Traceback" not in refused.stderr
        history = _prism(tmp_path, redis_query_url, "history", names[case], "--json", env=run)
        assert json.loads(history.stdout)[0]["signature"] == f"UNVERIFIED:{code}"
    listed = json.loads(_prism(tmp_path, redis_query_url, "list", "--json", env=run).stdout)
    verdicts = {row["name"]: row["signature"] for row in listed}
    assert verdicts[names["good"]] == "verified:k-merger"
    assert verdicts[names["forged"]] == "UNVERIFIED:bad-signature"
    assert verdicts[names["unsigned"]] == "UNVERIFIED:unsigned"
    # without a trust file nothing is claimed either way
    plain = json.loads(_prism(tmp_path, redis_query_url, "list", "--json").stdout)
    assert {row["signature"] for row in plain if row["name"] in names.values()} == {"unchecked"}
    client = RegistryClient(redis_query_url, verifier=global_verifier_for(trust))
    with pytest.raises(UnverifiedModelError) as info:
        client.get_model(names["forged"])
    assert info.value.reason_code == "bad-signature"
    assert client.get_model(names["good"])["key_id"] == "k-merger"
    client.close()


def global_verifier_for(trust: Path):
    from schemas.identity import KeyVerifier, load_trust_file

    return KeyVerifier(load_trust_file(trust), contract="GlobalModel")
