"""The event log: Redis Streams, atomic appends, reads, tails, the embedded Valkey."""

from chatlog.eventstore.codec import START, Cursor, parse_position, position_after
from chatlog.eventstore.embedded import EmbeddedValkey
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.store import (
    AppendResult,
    EventStore,
    PartitionStatus,
    StoreStatus,
    connect,
)

__all__ = [
    "START",
    "AppendResult",
    "Cursor",
    "EmbeddedValkey",
    "EventStore",
    "Keys",
    "PartitionStatus",
    "StoreStatus",
    "connect",
    "parse_position",
    "partition_of",
    "position_after",
]
