"""One root error, ``ChatlogError``, and a family per layer.

The HTTP layer maps these to problem+json in one place
(``chatlog.http.problems``); the CLI maps them to one readable line.
Each class carries the HTTP status it stands for, so the mapping cannot drift.
"""

from __future__ import annotations

from typing import Any


class ChatlogError(Exception):
    """Root of every error chatlog raises on purpose."""

    status: int = 500
    title: str = "Internal error"

    def extra(self) -> dict[str, Any]:
        """Fields added to the problem document beside ``detail``."""
        return {}


# -- input -----------------------------------------------------------------


class InvalidInput(ChatlogError, ValueError):
    """The caller sent something that can never be valid."""

    status = 400
    title = "Invalid input"


class InvalidProjectId(InvalidInput):
    """A project name that breaks the identity rules (too long, control characters)."""


class InvalidPosition(InvalidInput):
    """A stream position that is not ``<ms>-<seq>`` (or a cursor of them)."""


class NotFound(ChatlogError):
    """The thread, workflow or job asked for does not exist."""

    status = 404
    title = "Not found"


class ProjectNotFound(NotFound):
    """Nothing was ever written to this project (often: a misspelt name)."""

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        super().__init__(
            f"project {name!r} (key {key}) has never been written to; check its spelling "
            "(names are compared case-insensitively)"
        )

    def extra(self) -> dict[str, Any]:
        return {"project": self.key, "project_name": self.name}


# -- event store (PEP 249 style: integrity errors name what conflicted) ------


class EventStoreError(ChatlogError):
    """Errors of the event log."""


class IntegrityError(EventStoreError):
    """A write broke a rule of the log; nothing was written."""

    status = 409
    title = "Conflict"


class VersionConflict(IntegrityError):
    """The aggregate is not at the version the append expected."""

    title = "Version conflict"

    def __init__(self, aggregate: str, expected: int, current: int) -> None:
        self.aggregate = aggregate
        self.expected = expected
        self.current = current
        super().__init__(
            f"version conflict on {aggregate}: expected version {expected}, "
            f"current version is {current}"
        )

    def extra(self) -> dict[str, Any]:
        return {
            "aggregate": self.aggregate,
            "expected_version": self.expected,
            "current_version": self.current,
        }


class IdempotencyConflict(IntegrityError):
    """Some but not all event ids of a batch were appended before."""

    title = "Idempotency conflict"


class EventIdReused(IdempotencyConflict):
    """An event id of this project was appended before with other content: a retry
    must send the same event, a new event needs a new id."""

    title = "Event id reused"

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(
            f"event_id {event_id} was used for a different event in this project; "
            "a retry must send the same content, and a new event needs a new event_id"
        )

    def extra(self) -> dict[str, Any]:
        return {"event_id": self.event_id}


class PartitionMismatch(EventStoreError):
    """The log was created with another partition count."""

    status = 500
    title = "Partition count mismatch"


class PositionTrimmed(EventStoreError):
    """The position asked for lies inside history that was deliberately deleted.

    Only a cursor is ever gone: a read without one starts at the oldest event
    kept. ``oldest_cursor`` is the cursor to resume from (the caller's cursor
    with each deleted position moved up to its partition's horizon).
    """

    status = 410
    title = "Gone"

    def __init__(self, partition: int, position: str, horizon: str,
                 oldest_cursor: str | None = None) -> None:
        self.partition = partition
        self.position = position
        self.horizon = horizon
        self.oldest_cursor = oldest_cursor or horizon
        super().__init__(
            f"position {position} of partition {partition} was deleted: the events up to "
            f"{horizon} were removed on purpose; the oldest cursor still available is "
            f"{self.oldest_cursor} (or read without a cursor to start at the oldest event kept)"
        )

    def with_cursor(self, oldest_cursor: str) -> PositionTrimmed:
        """The same error naming a whole (multi-partition) cursor to resume from."""
        return PositionTrimmed(self.partition, self.position, self.horizon, oldest_cursor)

    def extra(self) -> dict[str, Any]:
        return {"partition": self.partition, "position": self.position, "horizon": self.horizon,
                "oldest_cursor": self.oldest_cursor}


class StoreUnavailable(EventStoreError):
    """Redis cannot be reached; nothing was written. Retry later.

    (When something may have been written, the append path raises
    :class:`OutcomeUnknown` instead.)"""

    status = 503
    title = "Event store unavailable"
    retry_after = 1


class OutcomeUnknown(EventStoreError):
    """The append may or may not be in the log: the store took the command but did
    not answer in time, and did not answer a check either. A retry with the same
    ``event_id`` is safe: it appends the event if it is missing and nothing if not.
    """

    status = 504
    title = "Outcome unknown"
    retry_after = 1

    def __init__(self, detail: str, event_ids: list[str] | None = None) -> None:
        #: The ids of the events whose append is in doubt (set by the append path).
        self.event_ids = list(event_ids or [])
        super().__init__(detail)

    def extra(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"retry_safe": True}
        if self.event_ids:
            doc["event_id"] = self.event_ids[0]
        if len(self.event_ids) > 1:
            doc["event_ids"] = self.event_ids
        return doc


class NotReplicated(OutcomeUnknown):
    """With ``ack=replicated``: the append reached the primary, but fewer replicas
    than required acknowledged it in time. It may or may not survive a failover;
    a retry with the same event ids is safe (it appends nothing twice, waits again).
    """

    title = "Append not replicated"

    def __init__(self, acknowledged: int, required: int, timeout: float) -> None:
        self.acknowledged = acknowledged
        self.required = required
        super().__init__(
            f"the append is on the primary but only {acknowledged} of {required} replicas "
            f"acknowledged it within {timeout:g} s; it may be lost on a failover. Retry "
            "with the same event_id (safe: a duplicate appends nothing)"
        )

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "replicas_acknowledged": self.acknowledged,
                "replicas_required": self.required}


class EmbeddedServerError(EventStoreError):
    """The embedded Valkey server could not be started."""

    title = "Embedded Valkey failed"


class DataDirError(EventStoreError):
    """The data dir is missing, or owned by another process."""

    title = "Data dir unavailable"


def cannot_use_dir(path: Any, what: str, exc: OSError) -> str:
    """One line saying why directory ``path`` cannot serve as ``what``: a file is
    there, no such filesystem, a name too long..."""
    import os

    why = ("it is not a directory" if os.path.exists(path) and not os.path.isdir(path)
           else exc.strerror or exc)
    return f"cannot use {path} as {what}: {why}"


class ArchiveError(EventStoreError):
    """The archive (sealed segments of old events) cannot be read or written as asked."""

    title = "Archive error"


class ArchiveConflict(ArchiveError):
    """A segment could not be published: it overlaps the archive, or another archiver
    holds a newer lease (fencing token) for the partition. Nothing was published."""

    status = 409
    title = "Archive conflict"


class ArchiveCorrupt(ArchiveError):
    """A segment or manifest does not hold what was written (count or checksum)."""

    title = "Archive corrupt"


# -- projections -------------------------------------------------------------


class ProjectionError(ChatlogError):
    """Errors of the read models."""


class ProjectionLagTimeout(ProjectionError):
    """A read-your-writes query waited too long for the projection."""

    status = 503
    title = "Projection behind"
    retry_after = 1


class ReadModelOutdated(ProjectionError):
    """The read model file was built for another schema: ``chatlog rebuild`` makes a new one."""

    status = 503
    title = "Read model needs a rebuild"

    def __init__(self, path: object, found: int, needed: int) -> None:
        self.found = found
        self.needed = needed
        super().__init__(
            f"read model schema {found}, this chatlog needs {needed}: run `chatlog rebuild` "
            f"(read model {path})"
        )


# -- orchestrator ------------------------------------------------------------


class OrchestratorError(ChatlogError):
    """Errors of workflows and jobs."""


class InvalidTransition(OrchestratorError):
    """The command does not apply in the workflow's current state."""

    status = 409
    title = "Invalid transition"

    def __init__(self, workflow_id: str, command: str, state: str) -> None:
        self.workflow_id = workflow_id
        self.command = command
        self.state = state
        super().__init__(
            f"cannot {command} workflow {workflow_id}: it is {state}"
        )

    def extra(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "command": self.command, "state": self.state}


class WaitTimeout(OrchestratorError, TimeoutError):
    """A wait reached its deadline before the awaited event arrived."""

    status = 408
    title = "Wait timed out"

    def __init__(self, workflow_id: str, awaited: str, waited: float) -> None:
        self.workflow_id = workflow_id
        self.awaited = awaited
        self.waited = waited
        super().__init__(
            f"workflow {workflow_id}: timed out after {waited:g} s waiting for {awaited}"
        )

    def extra(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "awaited": self.awaited, "waited": self.waited}


class OrchestratorStopped(OrchestratorError):
    """The orchestrator stopped (or never started) while a wait needed it."""

    status = 503
    title = "Orchestrator not running"
    retry_after = 1


# -- access ------------------------------------------------------------------


class Unauthorized(ChatlogError):
    """No token, or a token that is not known."""

    status = 401
    title = "Unauthorized"


class Forbidden(ChatlogError):
    """A known token without the scope this request needs."""

    status = 403
    title = "Forbidden"


class ConfigError(ChatlogError):
    """The settings cannot work (for example: public bind without tokens)."""

    title = "Configuration error"
