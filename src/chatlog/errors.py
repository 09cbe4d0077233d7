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


class PartitionMismatch(EventStoreError):
    """The log was created with another partition count."""

    status = 500
    title = "Partition count mismatch"


class PositionTrimmed(EventStoreError):
    """The position asked for lies before the log's retention horizon."""

    status = 410
    title = "Gone"

    def __init__(self, partition: int, position: str, horizon: str) -> None:
        self.partition = partition
        self.position = position
        self.horizon = horizon
        super().__init__(
            f"position {position} of partition {partition} was trimmed: the log "
            f"now starts after {horizon}; re-read from a snapshot or from the start"
        )

    def extra(self) -> dict[str, Any]:
        return {"partition": self.partition, "position": self.position, "horizon": self.horizon}


class StoreUnavailable(EventStoreError):
    """Redis cannot be reached; nothing was written. Retry later."""

    status = 503
    title = "Event store unavailable"
    retry_after = 1


class NotReplicated(StoreUnavailable):
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
        return {"replicas_acknowledged": self.acknowledged, "replicas_required": self.required}


class EmbeddedServerError(EventStoreError):
    """The embedded Valkey server could not be started."""

    title = "Embedded Valkey failed"


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
