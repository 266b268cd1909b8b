"""The Ed25519 identities of `prism up`: a key per signing service and one trust file.

`prism up` signs by default. Every central worker, edge and the merger signs
with its own private key, and the merger and the edges verify with public keys
only (docs/reliability.md, "Signed summaries and globals"). The keys live in
`prism up`'s state dir and a later `up` reuses them: a node keeps its identity
across restarts, so the summaries and globals still in the topics keep
verifying. A key is replaced only when it is missing or near its ``not_after``.

The trust file lists exactly the identities of the current plan, each for the
node ids its service signs for; a service that is no longer planned (``up
--edges 2`` after ``--edges 3``) is no longer trusted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.identity import (
    generate_private_key,
    load_private_key,
    parse_trust_file,
    public_key_b64,
    trust_entry,
    write_private_key,
    write_trust_file,
)

log = logging.getLogger(__name__)

__all__ = ["HMAC_SETTINGS", "Identity", "ensure", "signing_env"]

#: how long a key `prism up` makes is valid
VALID_DAYS = 365
#: a key with less left than this is replaced at the next `up`, so none expires mid-run
RENEW_DAYS = 30
#: the HMAC settings a user's environment may carry: a service given a key file must not
#: also get these (the two schemes refuse to be configured together)
HMAC_SETTINGS = ("PRISM_SIGNING_KEY", "PRISM_TRUSTED_KEYS")
TRUST_FILE = "trust.json"


@dataclass(frozen=True)
class Identity:
    """A signing service: its key id (also its key file's name) and the node ids it signs for."""

    key_id: str
    nodes: tuple[str, ...]


def key_file(directory: Path, key_id: str) -> Path:
    return directory / f"{key_id}.pem"


def _previous(path: Path) -> dict[str, dict[str, Any]]:
    """The trust file of the last `up`, as JSON; {} when missing or unreadable (it is rebuilt)."""
    try:
        text = path.read_text()
        parse_trust_file(text)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("trust file %s unreadable (%s): rebuilt from the key files", path, e)
        return {}
    return json.loads(text)


def _kept(
    path: Path, entry: dict[str, Any] | None, now: float
) -> tuple[Ed25519PrivateKey, str | None] | None:
    """The key file's key, and its ``not_after`` when the last trust file vouched for it;
    None when there is no usable key file or its key is near expiry (then it is removed:
    the files here are `prism up`'s own, never a user's)."""
    if not path.exists():
        return None
    try:
        key = load_private_key(path)
    except ValueError as e:
        log.warning("%s: replaced", e)
        path.unlink()
        return None
    if entry is None or entry.get("public_key") != public_key_b64(key):
        return key, None  # the key file is the identity; the trust file is rebuilt from it
    not_after = parse_trust_file(json.dumps({"k": entry}))["k"].not_after
    if not_after - now < RENEW_DAYS * 86400:
        log.info("key %s expires %s: replaced", path.name, entry["not_after"])
        path.unlink()
        return None
    return key, entry["not_after"]


def ensure(
    directory: Path,
    identities: Sequence[Identity],
    *,
    clock: Callable[[], float] = time.time,
) -> Path:
    """A 0600 key file for every identity (made when missing) and the trust file of them all.

    Idempotent: a second call reuses every key file and writes the same trust file.
    Returns the trust file's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # private keys inside
    trust_path = directory / TRUST_FILE
    previous = _previous(trust_path)
    now = clock()
    default_not_after = (datetime.fromtimestamp(now, UTC) + timedelta(days=VALID_DAYS)).date()
    trust: dict[str, Any] = {}
    made = []
    for identity in identities:
        path = key_file(directory, identity.key_id)
        kept = _kept(path, previous.get(identity.key_id), now)
        if kept is None:
            key, not_after = generate_private_key(), None
            write_private_key(path, key)
            made.append(identity.key_id)
        else:
            key, not_after = kept
        trust[identity.key_id] = trust_entry(
            key, list(identity.nodes), not_after or default_not_after.isoformat()
        )
    write_trust_file(trust_path, trust)
    log.info(
        "identities in %s: made=%s reused=%s",
        directory,
        ",".join(made) or "-",
        ",".join(sorted(set(trust) - set(made))) or "-",
    )
    return trust_path


def signing_env(directory: Path, key_id: str | None) -> dict[str, str]:
    """The settings a service signs and verifies with (``key_id`` None: verifies only)."""
    env = {"PRISM_TRUST_FILE": str(directory / TRUST_FILE), "PRISM_REQUIRE_SIGNED": "true"}
    if key_id is not None:
        env |= {
            "PRISM_SIGNING_KEY_ID": key_id,
            "PRISM_SIGNING_KEY_FILE": str(key_file(directory, key_id)),
        }
    return env
