"""The contracts: Avro schemas, the wire codec, and the event-log formats.

>>> from schemas import Codec, SCHEMA_NAMES
>>> {"WeightSummary", "GlobalModel", "DeadLetter", "SecAggKeys"} <= set(SCHEMA_NAMES)
True
"""

from schemas.codec import SCHEMA_NAMES, Codec
from schemas.errors import SchemaError

__all__ = ["SCHEMA_NAMES", "Codec", "SchemaError"]
