"""Schema evolution: bytes from another writer version still decode, by Avro's rules.

Producers and consumers upgrade at different times, so a consumer on the
current contract must read what an older producer wrote (and say clearly
when it cannot).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas import Codec, SchemaError
from schemas.codec import MARKER, fingerprint, load_schema, register_writer_schema
from schemas.registry import HISTORY_DIR, register_history

OLD_TX = {
    "event_id": "e1",
    "ts": 1_700_000_000_000,
    "site_id": "store-1",
    "region": "eu",
    "account_id": "acc-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "features": {"amount": 12.5, "hour": 3.0},
    "label": None,
}


def transaction_version(*, drop: tuple[str, ...] = (), **retype: Any) -> dict[str, Any]:
    """The current Transaction schema with fields dropped or retyped: another version."""
    schema = load_schema("Transaction")
    fields = [dict(f) for f in schema["fields"] if f["name"] not in drop]
    for f in fields:
        if f["name"] in retype:
            f["type"] = retype[f["name"]]
    return dict(schema, fields=fields)


def written_by(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Bytes exactly as a producer on that version would send them."""
    fp = register_writer_schema("Transaction", schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema, named_schemas={}), record)
    return MARKER + fp + body.getvalue()


def test_older_version_without_currency_decodes_with_the_default() -> None:
    old = transaction_version(drop=("currency",))
    data = written_by(old, OLD_TX)
    assert data[2:10] != fingerprint("Transaction")
    decoded = Codec().decode(data, expected="Transaction")
    assert decoded == dict(OLD_TX, currency="EUR")
    assert Codec().decode_any(data)[0] == "Transaction"


def test_registration_is_idempotent_and_keyed_by_fingerprint() -> None:
    old = transaction_version(drop=("currency",))
    assert register_writer_schema("Transaction", old) == register_writer_schema("Transaction", old)
    assert register_writer_schema("Transaction", load_schema("Transaction")) == fingerprint(
        "Transaction"
    )


def test_newer_writer_field_is_skipped_by_the_current_reader() -> None:
    newer = load_schema("Transaction")
    newer["fields"] = [*newer["fields"], {"name": "channel", "type": "string", "default": "pos"}]
    data = written_by(newer, dict(OLD_TX, currency="USD", channel="web"))
    assert Codec().decode(data) == dict(OLD_TX, currency="USD")


def test_int_amount_promotes_to_double() -> None:
    data = written_by(transaction_version(amount="long"), dict(OLD_TX, amount=12, currency="EUR"))
    decoded = Codec().decode(data)
    assert decoded["amount"] == 12.0 and type(decoded["amount"]) is float


def test_a_version_missing_a_required_field_is_wrong_schema() -> None:
    data = written_by(transaction_version(drop=("merchant_id",)), dict(OLD_TX, currency="EUR"))
    with pytest.raises(SchemaError) as info:
        Codec().decode(data)
    assert info.value.reason_code == "wrong-schema" and "merchant_id" in str(info.value)


def test_unregistered_version_is_unknown_fingerprint() -> None:
    schema = transaction_version(drop=("label",))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), dict(OLD_TX, currency="EUR"))
    fp = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)), "CRC-64-AVRO"
    ))  # fmt: skip
    with pytest.raises(SchemaError) as info:
        Codec().decode(MARKER + fp + body.getvalue())
    assert info.value.reason_code == "unknown-fingerprint" and fp.hex() in str(info.value)


def test_registering_nonsense_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        register_writer_schema("Transaction", {"type": "record", "fields": "nope"})
    assert info.value.reason_code == "wrong-schema"
    with pytest.raises(SchemaError) as info:
        register_writer_schema("Order", load_schema("Transaction"))
    assert info.value.reason_code == "unknown-schema"


def test_history_directory_versions_decode_after_the_contract_moves_on(tmp_path: Path) -> None:
    old = transaction_version(drop=("currency",), amount="float")
    (tmp_path / "Transaction.v0.avsc").write_text(json.dumps(old), encoding="utf-8")
    [fp] = register_history(tmp_path)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), OLD_TX)
    decoded = Codec().decode(MARKER + fp + body.getvalue(), expected="Transaction")
    assert decoded == dict(OLD_TX, currency="EUR")


def test_shipped_history_files_all_load() -> None:
    # every file a developer adds to schemas/avro/history must be a valid old version
    assert len(register_history(HISTORY_DIR)) == len(list(HISTORY_DIR.glob("*.avsc")))


@pytest.mark.parametrize(
    ("content", "says"),
    [("{not json", "not a readable Avro schema"), ('{"type": "record"}', "not a readable")],
)
def test_broken_history_file_is_named(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "Transaction.v0.avsc").write_text(content, encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        register_history(tmp_path)
    assert info.value.reason_code == "wrong-schema" and "Transaction.v0.avsc" in str(info.value)
    assert says in str(info.value)


def test_a_version_must_carry_the_contract_name() -> None:
    # otherwise Label bytes could be taken for a Transaction version
    with pytest.raises(SchemaError) as info:
        register_writer_schema("Transaction", load_schema("Label"))
    assert info.value.reason_code == "wrong-schema" and "not 'prism.Label'" in str(info.value)
    with pytest.raises(SchemaError) as info:
        register_writer_schema("Transaction", dict(load_schema("Transaction"), namespace="other"))
    assert "must declare prism.Transaction" in str(info.value)
    label = Codec().encode("Label", {"event_id": "e", "ts": 1, "label": True})
    assert Codec().decode_any(label)[0] == "Label"


def test_a_score_written_before_expert_provenance_decodes_with_experts_null() -> None:
    import json

    old = json.loads((HISTORY_DIR / "Score.v1.avsc").read_text())
    record = {"event_id": "e1", "ts": 1, "scored_at": 2, "node_id": "store-1",
              "model_name": "fraud-linear", "model_version": 3, "source": "blend",
              "score": 0.25, "latency_ms": 0.1, "label": True}  # fmt: skip
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), record)
    data = MARKER + register_writer_schema("Score", old) + body.getvalue()
    decoded = Codec().decode(data, expected="Score")
    assert decoded == record | {"experts": None, "provenance": {}}
    mixed = record | {"experts": [{"name": "personal", "weight": 0.2, "version": 0},
                                  {"name": "global", "weight": 0.8, "version": 3}]}  # fmt: skip
    again = Codec().decode(Codec().encode("Score", mixed), expected="Score")
    assert again == mixed | {"provenance": {}}


def test_a_packed_global_written_before_deflated_counts_decodes_as_varints() -> None:
    import numpy as np

    from models.serialization import global_model_from_record, global_model_record
    from models.summary import Summary

    old = json.loads((HISTORY_DIR / "GlobalModel.v2.avsc").read_text())
    s = Summary("m", "linear", ("a", "b"), 3,
                {"count": np.array([3, 0]), "weights": np.array([0.5, -1.25])})  # fmt: skip
    record = global_model_record(s, version=1, strategy="fedavg", created_at_ms=1)
    del record["state"]["packed"]["counts_codec"]  # that writer did not know it
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), record)
    data = MARKER + register_writer_schema("GlobalModel", old) + body.getvalue()
    decoded = Codec().decode(data, expected="GlobalModel")
    assert decoded["state"]["packed"]["counts_codec"] == "varint"
    info = global_model_from_record(decoded)
    assert info.summary.tensors["count"].tolist() == [3, 0]
    assert info.summary.tensors["weights"].tolist() == [0.5, -1.25]


def test_a_global_written_before_the_quality_gate_decodes_as_published() -> None:
    import numpy as np

    from models.serialization import global_model_record
    from models.summary import Summary

    old = json.loads((HISTORY_DIR / "GlobalModel.v4.avsc").read_text())
    s = Summary("m", "linear", ("a",), 3, {"count": np.array([3]), "weights": np.array([0.5])})
    record = global_model_record(s, version=2, strategy="fedavg", created_at_ms=1)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), record)
    data = MARKER + register_writer_schema("GlobalModel", old) + body.getvalue()
    decoded = Codec().decode(data, expected="GlobalModel")
    assert decoded["held_back"] is None and decoded["version"] == 2
    held = dict(record, held_back="holdout roc_auc 0.1 is 0.8 worse")
    assert Codec().decode(Codec().encode("GlobalModel", held))["held_back"] == held["held_back"]


def test_a_score_written_before_rollback_provenance_decodes_with_an_empty_map() -> None:
    import json

    old = json.loads((HISTORY_DIR / "Score.v2.avsc").read_text())
    record = {"event_id": "e1", "ts": 1, "scored_at": 2, "node_id": "store-1",
              "model_name": "fraud-linear", "model_version": 3, "source": "global",
              "score": 0.25, "latency_ms": 0.1, "label": None, "experts": None}  # fmt: skip
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), record)
    data = MARKER + register_writer_schema("Score", old) + body.getvalue()
    assert Codec().decode(data, expected="Score") == record | {"provenance": {}}
    rolled = record | {"provenance": {"restored_from": "2", "reason": "incident 7"}}
    assert Codec().decode(Codec().encode("Score", rolled)) == rolled


def test_a_global_written_before_rollbacks_decodes_as_a_merged_version() -> None:
    import numpy as np

    from models.serialization import global_model_from_record, global_model_record
    from models.summary import Summary

    old = json.loads((HISTORY_DIR / "GlobalModel.v5.avsc").read_text())
    s = Summary("m", "linear", ("a",), 3, {"count": np.array([3]), "weights": np.array([0.5])})
    record = global_model_record(s, version=2, strategy="fedavg", created_at_ms=1)
    body = io.BytesIO()
    old_record = {k: v for k, v in record.items() if k not in ("restored_from", "reason")}
    fastavro.schemaless_writer(body, fastavro.parse_schema(old, named_schemas={}), old_record)
    data = MARKER + register_writer_schema("GlobalModel", old) + body.getvalue()
    decoded = Codec().decode(data, expected="GlobalModel")
    assert decoded["restored_from"] is None and decoded["reason"] is None
    rolled = global_model_record(
        s, version=9, strategy="rollback", created_at_ms=1, restored_from=2, reason="incident"
    )
    info = global_model_from_record(Codec().decode(Codec().encode("GlobalModel", rolled)))
    assert (info.version, info.restored_from, info.reason) == (9, 2, "incident")
