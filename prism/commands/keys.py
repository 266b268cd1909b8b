"""`prism keys generate | revoke`: Ed25519 identities and the trust file the verifiers read.

A node, a central shard or the merger signs with its own private key
(``PRISM_SIGNING_KEY_FILE``); the merger and the edges hold only the trust file
of public keys (``PRISM_TRUST_FILE``; docs/reliability.md). These commands
write both halves with the same rules the services read them by
(schemas/identity.py), so a file they write is never refused at start-up.
The trust file is rewritten whole through a temporary file and a rename: a
verifier never reads half an edit.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.errors import UsageError
from runtime.settings import Settings
from schemas.identity import (
    generate_private_key,
    parse_trust_file,
    trust_entry,
    write_private_key,
    write_trust_file,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="Ed25519 signing keys and the trust file.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser(
        "generate", help="A new private key file, and its public key in the trust file."
    )
    gen.add_argument("--id", required=True, help="key id the records will carry, e.g. store-1-2027")
    gen.add_argument(
        "--key-file",
        type=Path,
        required=True,
        help="private key to write (0600; never overwritten)",
    )
    gen.add_argument(
        "--nodes",
        action="append",
        required=True,
        help="node id or glob the key may sign for (repeatable); `global:*` for the merger",
    )
    gen.add_argument(
        "--not-after", required=True, help="last valid day or instant, ISO 8601 (e.g. 2027-06-30)"
    )
    gen.add_argument(
        "--trust-file",
        type=Path,
        help="add the entry to this trust file (created if missing); without it, print the entry",
    )
    gen.set_defaults(handler=cmd_generate)
    rev = actions.add_parser("revoke", help="Revoke a key in the trust file, with a reason.")
    rev.add_argument("--id", required=True, help="key id to revoke")
    rev.add_argument("--trust-file", type=Path, required=True, help="the trust file to edit")
    rev.add_argument("--reason", required=True, help="why, kept in the file (e.g. key-leaked)")
    rev.add_argument(
        "--at",
        help="revoked from this ISO 8601 instant on (default: now): from then on the "
        "verifiers refuse every record the key signed",
    )
    rev.set_defaults(handler=cmd_revoke)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    trust = _read(args.trust_file) if args.trust_file is not None else None
    if trust is not None and args.id in trust:
        raise UsageError(f"key id {args.id!r} is already in {args.trust_file}: pick a new id")
    key = generate_private_key()
    try:
        entry = trust_entry(key, args.nodes, args.not_after)
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        write_private_key(args.key_file, key)
    except FileExistsError as e:
        raise UsageError(f"{args.key_file} exists: a key file is never overwritten") from e
    if trust is None:
        print(json.dumps({args.id: entry}, indent=2))
        return 0
    trust[args.id] = entry
    _write(args.trust_file, trust)
    print(f"keys: wrote {args.key_file} (0600) and trusted {args.id!r} in {args.trust_file}")
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    trust = _read(args.trust_file)
    if args.id not in trust:
        raise UsageError(f"key id {args.id!r} is not in {args.trust_file}")
    at = args.at or datetime.now(UTC).isoformat(timespec="seconds")
    trust[args.id] = dict(trust[args.id], revoked_at=at, reason=args.reason)
    _write(args.trust_file, trust)
    print(f"keys: {args.id!r} revoked from {at} ({args.reason}) in {args.trust_file}")
    return 0


def _read(path: Path) -> dict[str, Any]:
    """The trust file as JSON, checked by the verifiers' own parser; {} when missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UsageError(f"cannot read the trust file {path}: {e.strerror}") from e
    try:
        parse_trust_file(text)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from e
    return json.loads(text)


def _write(path: Path, trust: dict[str, Any]) -> None:
    try:
        write_trust_file(path, trust)  # checked by what the services will read back
    except ValueError as e:
        raise UsageError(str(e)) from e
