"""Least-privilege Redis users, one per kind of Prism service (ACL rules in one place).

The local redis-server (:mod:`prism.stack.redis_server`) and docker-compose's
``redis`` service declare the same users with these rules (a test compares
them). Each service connects as its own user, so a compromised or buggy
service can touch only its own keys:

=============  ==========================================  ===========================
user           keys                                        commands
=============  ==========================================  ===========================
prism-central  its checkpoints                             read, write, MULTI/EXEC
prism-merger   its state (``merger:*``) + the registry     read, write, MULTI/EXEC
               + operator controls (``pins``)
prism-edge     the registry's models + ``pins``            read only
prism-shadow   its pairing state (``shadow:*``)            read, write, MULTI/EXEC
prism-query    every key                                   read only
default        every key (admin: ``prism stack``, resets)  all
=============  ==========================================  ===========================

Nobody but the admin may run dangerous commands (KEYS, FLUSHALL, CONFIG,
DEBUG, CLIENT KILL, ...); no user subscribes to channels. The operator
commands (``prism models rollback | quarantine | pin``) write the registry,
so they need the merger's user (or the admin); the query user is refused.
"""

from __future__ import annotations

QUERY_USER = "prism-query"
#: service role -> Redis user; ``prism up`` gives each service its role's URL
ROLE_USERS = {
    "central": "prism-central",
    "merger": "prism-merger",
    "edge": "prism-edge",
    "shadow": "prism-shadow",
}

_READ = "-@all +@read +@connection -@dangerous"
_WRITE = "-@all +@read +@write +@transaction +@connection -@dangerous"


def acl_rules(prefix: str) -> dict[str, str]:
    """User -> its ACL rules (without ``on`` and the password) for keys under ``prefix``."""
    registry = f"~{prefix}:models ~{prefix}:model:* ~{prefix}:nodes ~{prefix}:node:*"
    pins = f"~{prefix}:pins"  # node -> the version it stays on: the edges read theirs
    return {
        "prism-central": f"resetkeys ~{prefix}:checkpoint:* resetchannels {_WRITE}",
        "prism-merger": f"resetkeys ~{prefix}:merger:* {registry} {pins} resetchannels {_WRITE}",
        "prism-edge": f"resetkeys ~{prefix}:models ~{prefix}:model:* {pins} resetchannels {_READ}",
        "prism-shadow": f"resetkeys ~{prefix}:shadow:* resetchannels {_WRITE}",
        QUERY_USER: f"resetkeys ~* resetchannels {_READ}",
    }


def user_line(user: str, password: str, prefix: str) -> str:
    """One ``user`` directive of redis.conf / ``--user`` argument."""
    return f"{user} on >{password} {acl_rules(prefix)[user]}"
