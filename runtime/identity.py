"""Signers and verifiers from the settings, for every service that signs or checks.

Two schemes, chosen by what is configured: an Ed25519 key file + trust file
(the default of `prism up` and compose: verifiers hold public keys only) or,
for a small deployment with one operator, HMAC secrets (schemas/signing.py).
Globals are signed with public keys only: every edge would otherwise hold the
merger's secret and could forge a global for all the others.
"""

from __future__ import annotations

import logging

from runtime.errors import UsageError
from runtime.settings import Settings
from schemas.identity import KeySigner, KeyVerifier, load_private_key, load_trust_file
from schemas.signing import Signer, Verifier, parse_trusted_keys, signer_from

log = logging.getLogger(__name__)

__all__ = [
    "global_verifier",
    "node_signer",
    "round_verifiers",
    "step_signer",
    "step_verifiers",
    "summary_verifier",
]


def node_signer(settings: Settings) -> Signer | KeySigner | None:
    """This process's signer: a key file wins over an HMAC secret; None when unsigned."""
    key_id, key_file = settings.signing_key_id, settings.signing_key_file
    try:
        if key_file is not None:
            if settings.signing_key is not None:
                raise ValueError("set PRISM_SIGNING_KEY_FILE or PRISM_SIGNING_KEY, not both")
            if not key_id:
                raise ValueError("PRISM_SIGNING_KEY_FILE needs PRISM_SIGNING_KEY_ID")
            return KeySigner(key_id, load_private_key(key_file))
        secret = settings.signing_key.get_secret_value() if settings.signing_key else None
        return signer_from(key_id, secret)
    except ValueError as e:
        raise UsageError(f"signing: {e}") from e


def _key_verifier(settings: Settings, contract: str) -> KeyVerifier | None:
    if settings.trust_file is None:
        return None
    try:
        keys = load_trust_file(settings.trust_file)
        verifier = KeyVerifier(keys, contract=contract, required=settings.require_signed)
    except ValueError as e:
        raise UsageError(f"trust file: {e}") from e
    log.info(
        "signed %s: required=%s trusted key ids=%s trust_file=%s",
        contract,
        verifier.required,
        ",".join(sorted(keys)) or "-",
        settings.trust_file,
    )
    return verifier


def summary_verifier(settings: Settings) -> Verifier | KeyVerifier | None:
    """The merger's check of WeightSummary records; None when nothing is checked."""
    if settings.trust_file is not None and settings.trusted_keys is not None:
        raise UsageError("set PRISM_TRUST_FILE (public keys) or PRISM_TRUSTED_KEYS (HMAC), not two")
    if settings.trust_file is not None:
        return _key_verifier(settings, "WeightSummary")
    try:
        secret = settings.trusted_keys.get_secret_value() if settings.trusted_keys else None
        verifier = Verifier(parse_trusted_keys(secret), required=settings.require_signed)
    except ValueError as e:
        raise UsageError(f"signed summaries: {e}") from e
    if not verifier.active:
        return None
    log.info(
        "signed summaries: required=%s trusted key ids=%s (HMAC)",
        verifier.required,
        ",".join(sorted(verifier.keys)) or "-",
    )
    return verifier


def global_verifier(settings: Settings) -> KeyVerifier | None:
    """What a reader of GlobalModel records (edge, registry, CLI) checks; None: no trust file."""
    return _key_verifier(settings, "GlobalModel")


def step_verifiers(settings: Settings, contracts: tuple[str, ...]) -> dict[str, KeyVerifier | None]:
    """The merger's check of secure aggregation's step records: public keys only.

    An HMAC secret would let the merger forge any node's step (it holds every
    secret), which is exactly what the signatures are there to prevent.
    """
    if settings.trust_file is None:
        if settings.trusted_keys is not None:
            raise UsageError(
                "secure aggregation checks step records with public keys only: set "
                "PRISM_TRUST_FILE (HMAC PRISM_TRUSTED_KEYS cannot sign them)"
            )
        log.warning("secure aggregation step records are NOT verified (no PRISM_TRUST_FILE)")
        return dict.fromkeys(contracts)
    return {c: _key_verifier(settings, c) for c in contracts}


def step_signer(settings: Settings) -> KeySigner | None:
    """A node's signer for step records: its Ed25519 key (None: unsigned)."""
    signer = node_signer(settings)
    if signer is not None and not isinstance(signer, KeySigner):
        raise UsageError(
            "--secure-agg signs step records with the node's public-key identity "
            "(PRISM_SIGNING_KEY_FILE), not an HMAC secret"
        )
    return signer


def round_verifiers(settings: Settings) -> tuple[KeyVerifier | None, KeyVerifier | None]:
    """A node's checks in secure rounds: the merger's phase records (signed by its global
    key) and its peers' confirmations of a survivor set. None, None: no trust file."""
    if settings.trust_file is None:
        log.warning("secure round records of the merger are NOT verified (no PRISM_TRUST_FILE)")
        return None, None
    return _key_verifier(settings, "SecAggRound"), _key_verifier(settings, "SecAggConfirm")
