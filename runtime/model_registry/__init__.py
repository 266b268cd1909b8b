"""The Redis model registry: where every current model, its history and each node live.

Key layout (``{p}`` is the key prefix, default ``prism``; values use the wire
codec, so ``PRISM_ENCODING=json`` makes them readable with ``redis-cli``):

=================================  ======  =====================================================
key                                type    value
=================================  ======  =====================================================
``{p}:models``                     set     names of every model with a current version
``{p}:model:{name}:current``       string  the current ``GlobalModel`` (encoded)
``{p}:model:{name}:history``       list    newest first, bounded: encoded ``GlobalModel`` records,
                                           each with its lineage (contributors, excluded + reasons);
                                           versions the quality gate held back carry ``held_back``
``{p}:model:{name}:quarantine``    set     versions never to be served again (operator)
``{p}:model:{name}:rollback``      hash    a pending operator rollback: to, reason, at
``{p}:pins``                       hash    node id -> the global version it stays on
``{p}:nodes``                      set     ids of every node that sent an update
``{p}:node:{id}``                  hash    last_seen_ms, last_sequence, tier, region, model_name,
                                           excluded (0/1), reason, metrics (JSON), meta (JSON:
                                           a central shard's worker and partition)
``{p}:checkpoint:{group}:{part}``  string  a central learner's checkpoint per partition (written
                                           by streams/central/checkpoint.py, not this package)
=================================  ======  =====================================================

Each write (a new global model with the node records it touches) is one
MULTI/EXEC transaction, so a reader never sees a model without its history
or nodes that point to a version not yet stored.
"""

from runtime.model_registry.client import RegistryClient, UnverifiedModelError
from runtime.model_registry.keys import RegistryKeys
from runtime.model_registry.lifecycle import LifecycleControls
from runtime.model_registry.writer import NodeRecord, RegistryWriter

__all__ = [
    "LifecycleControls",
    "NodeRecord",
    "RegistryClient",
    "RegistryKeys",
    "RegistryWriter",
    "UnverifiedModelError",
]
