"""``prism central reset``: forget a group's checkpoints, only while no worker holds them.

A live worker rewrites its partitions' checkpoints every few seconds and commits
Kafka offsets from them, so deleting under it would be undone by its next
checkpoint (or leave offsets that no checkpoint explains). The reset therefore
asks the broker first whether the consumer group has members and refuses while
it has any. Without a checkpoint the next worker starts a fresh model at the
group's committed offsets; with ``delete_offsets`` the group is deleted in Kafka
too, and it starts from the earliest record still on the topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from runtime.errors import StackError, UsageError
from streams.central.checkpoint import CheckpointStore


@dataclass(frozen=True)
class ResetOutcome:
    group: str
    partitions: list[int]
    keys_deleted: int
    offsets_deleted: bool


def _not_found(e: KafkaException) -> bool:
    error = e.args[0] if e.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND


def live_members(admin: AdminClient, group: str, *, timeout: float = 10.0) -> list[str]:
    """``client_id@host`` of each member of ``group`` (none for an unknown group)."""
    future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        description = future.result()
    except KafkaException as e:
        if _not_found(e):
            return []
        raise StackError(f"could not describe consumer group {group!r}: {e}") from e
    return [f"{m.client_id}@{m.host}" for m in description.members]


def _delete_group(admin: AdminClient, group: str, *, timeout: float) -> bool:
    future = admin.delete_consumer_groups([group], request_timeout=timeout)[group]
    try:
        future.result()
    except KafkaException as e:
        if _not_found(e):
            return False
        raise StackError(f"could not delete consumer group {group!r}: {e}") from e
    return True


def reset(
    store: CheckpointStore,
    admin: AdminClient,
    *,
    confirmed: bool,
    delete_offsets: bool = False,
    timeout: float = 10.0,
) -> ResetOutcome:
    """Delete ``store.group``'s checkpoints; :class:`UsageError` while it has members
    or without ``confirmed`` (the message then says what would be deleted)."""
    group = store.group
    members = live_members(admin, group, timeout=timeout)
    if members:
        raise UsageError(
            f"consumer group {group!r} has {len(members)} live member(s) "
            f"({', '.join(members)}): stop its workers first (`prism down`, or SIGTERM to "
            f"`prism central run --group {group}`); a worker killed with SIGKILL stays a "
            "member until its session times out (45 s)"
        )
    partitions = store.partitions()
    if not confirmed:
        what = (
            f"the checkpoints of partitions {_listed(partitions)}"
            if partitions
            else "no checkpoints (there are none)"
        )
        offsets = " and the group's committed Kafka offsets" if delete_offsets else ""
        raise UsageError(
            f"refusing without --yes: this would delete {what} of group {group!r}{offsets}"
        )
    deleted = store.clear(partitions)
    offsets_deleted = delete_offsets and _delete_group(admin, group, timeout=timeout)
    return ResetOutcome(group, partitions, deleted, offsets_deleted)


def _listed(partitions: list[int]) -> str:
    return ", ".join(map(str, partitions))


def describe(outcome: ResetOutcome) -> str:
    """One line for the user: what went, and where the next worker starts."""
    if outcome.partitions:
        gone = (
            f"deleted {outcome.keys_deleted} key(s): the checkpoints of partitions "
            f"{_listed(outcome.partitions)} of group {outcome.group!r}"
        )
    else:
        gone = f"group {outcome.group!r} had no checkpoints"
    if outcome.offsets_deleted:
        start = "its committed Kafka offsets deleted: the next worker learns from the earliest"
    else:
        start = "Kafka offsets kept: the next worker starts a fresh model where the group left off"
    return f"{gone}; {start}"
