"""The event log: Redis Streams, atomic appends, reads, tails, the embedded Valkey."""

from chatlog.eventstore.codec import START, Cursor, parse_position, position_after
from chatlog.eventstore.connection import (
    UNAVAILABLE,
    guard,
    raise_if_cancelled,
    stream_items,
    text,
    unavailable,
)
from chatlog.eventstore.embedded import EmbeddedValkey
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.store import (
    AppendResult,
    EventStore,
    LogInfo,
    PartitionStatus,
    StoreStatus,
    connect,
)

__all__ = [
    "START",
    "UNAVAILABLE",
    "AppendResult",
    "Cursor",
    "EmbeddedValkey",
    "EventStore",
    "Keys",
    "LogInfo",
    "PartitionStatus",
    "StoreStatus",
    "connect",
    "guard",
    "parse_position",
    "partition_of",
    "position_after",
    "raise_if_cancelled",
    "stream_items",
    "text",
    "unavailable",
]
