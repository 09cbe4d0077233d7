"""One typed settings object, built from flags and ``CHATLOG_*`` variables.

Constructors take a :class:`Settings`; nothing deep inside reads the
environment.
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatlog.identity import DEFAULT_PROJECT_NAMESPACE

#: The longest duration a setting may name (ten years): a timeout, lease or window
#: beyond it (or infinite) cannot be kept as Redis milliseconds or an asyncio timer.
MAX_SECONDS = 10 * 365 * 24 * 3600


class Settings(BaseSettings):
    """chatlog's settings; every field can be set as ``CHATLOG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CHATLOG_", extra="forbid")

    @field_validator("tokens_file", mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        """``CHATLOG_TOKENS_FILE=`` is no file name (it read as the directory '.')."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name the tokens file, or leave the setting out")
        return value

    @field_validator("*")
    @classmethod
    def _finite(cls, value: object) -> object:
        """Every float setting is a finite number of seconds up to ``MAX_SECONDS``."""
        if isinstance(value, float) and not (math.isfinite(value) and
                                             abs(value) <= MAX_SECONDS):
            raise ValueError(f"must be a finite number of seconds up to {MAX_SECONDS:,} "
                             f"(ten years), not {value}")
        return value

    redis_url: str | None = Field(
        default=None,
        description="redis://, rediss://, unix:// or redis+cluster:// URL; unset = embedded Valkey",
    )
    data_dir: Path = Field(default=Path("data"), description="Where Valkey and SQLite keep data")
    host: str = Field(default="127.0.0.1", description="HTTP bind address")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port")
    partitions: int = Field(
        default=1, ge=1, le=1024, description="Log partitions (fixed at creation)"
    )
    key_prefix: str = Field(default="chatlog", pattern=r"^[A-Za-z0-9_.-]+$")
    start_timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for start_task")
    approval_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for approval")
    run_timeout: float | None = Field(
        default=None, gt=0,
        description="Seconds a workflow may run (from start_task, and from each approval "
        "decision) before it times out; unset: no limit. A workflow's own run_timeout wins",
    )
    tokens_file: Path | None = Field(default=None, description="JSON file of bearer tokens")
    project_namespace: uuid.UUID = Field(
        default=DEFAULT_PROJECT_NAMESPACE, description="uuid5 namespace for project keys"
    )
    idempotency_window: float = Field(
        default=86_400.0, gt=0, description="Seconds a client-supplied event id is remembered"
    )
    outcome_window: float = Field(
        default=600.0, gt=0, description="Seconds a server-made event id is remembered: a "
        "retry of an append answered 504 (outcome unknown) with its event_id within this "
        "time appends nothing twice")
    outcome_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an append that the store did not answer "
        "keeps asking it for the outcome before answering 504 (outcome unknown)")
    ack: Literal["local", "replicated"] = Field(
        default="local", description="local: fsync on the primary; replicated: also N replicas"
    )
    ack_replicas: int = Field(default=1, ge=1, description="Replicas for ack=replicated")
    ack_timeout: float = Field(default=2.0, gt=0, description="Seconds to wait for replicas")
    ack_fsync: bool = Field(
        default=False,
        description="ack=replicated: wait until the replicas have fsynced the append to their "
        "AOF (WAITAOF), not only applied it (WAIT)",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body")
    read_your_writes_timeout: float = Field(
        default=5.0, ge=0, description="Longest wait of a query for min_position"
    )
    projector_commit_interval: float = Field(
        default=0.05, ge=0, le=5,
        description="Seconds the projector lets events gather after a commit while it keeps "
        "up (fewer, larger transactions under load; a min_position query ends the pause)",
    )
    job_lease: float = Field(default=30.0, gt=0, description="Seconds a job lease lasts")
    job_max_deliveries: int = Field(default=5, ge=1, description="Deliveries before dead letter")
    sse_keepalive: float = Field(default=15.0, gt=0, description="Seconds between SSE keep-alives")
    sse_buffer: int = Field(default=1000, ge=1, description="Events buffered per SSE subscriber")
    valkey_max_restarts: int = Field(
        default=5, ge=0,
        description="serve: restarts of a dead embedded Valkey tried in a row (with backoff) "
        "before serve exits with an error",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a connection has to send a request line and "
        "headers (from opening, or from its first byte after a keep-alive pause)")
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request has to send its whole body")
    keepalive_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an idle keep-alive connection stays open")
    max_connections: int = Field(
        default=1000, ge=8, description="Open HTTP connections at most (lowered to fit the "
        "open-file limit); at the cap a new connection evicts the longest idle one")
    replay_page_bytes: int = Field(
        default=4 * 1_048_576, ge=1024, description="Event bytes a replay page holds at most "
        "(beside its limit; a page always holds one event): has_more says go on")
    log_level: str = Field(default="INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$",
                           description="debug, info, warning, error or critical")
    archive_url: str | None = Field(
        default=None,
        description="Where sealed segments of old events go: a directory, file:// or an fsspec "
        "URL (s3://..., needs chatlog[s3]); unset = <data dir>/archive. Shared by every node",
    )
    hot_events: int = Field(
        default=500_000, ge=0,
        description="Events per partition kept in Redis (~600 B each); older ones are archived "
        "once the excess reaches a tenth of this (0 = no count bound)",
    )
    hot_seconds: float = Field(
        default=0.0, ge=0,
        description="Seconds an event stays in Redis before it is archived (0 = no age bound)",
    )
    hot_bytes: int = Field(
        default=512 * 1024 * 1024, ge=0,
        description="Bytes of Redis memory a partition's stream may use before its oldest "
        "events are archived (0 = no memory bound)",
    )
    archive_interval: float = Field(
        default=30.0, gt=0, description="Seconds between the archiver's passes in serve"
    )
    archive_segment_events: int = Field(
        default=100_000, ge=1, description="Most events per archive segment"
    )
    archive_lease: float = Field(
        default=30.0, gt=0,
        description="Seconds an archiver's lease on a partition lasts unless renewed",
    )
    archiver_crash_at: str | None = Field(
        default=None,
        description="Tests only: the archiver exits the process (os._exit) at this step",
    )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "readmodel.sqlite"

    @property
    def archive_location(self) -> str:
        """Where the archive lives: ``archive_url``, or ``<data dir>/archive``."""
        return self.archive_url or str(self.data_dir / "archive")

    @property
    def archive_dir(self) -> Path:
        """Where the archive tier's segments live (``<data dir>/archive``)."""
        return self.data_dir / "archive"

    @property
    def valkey_dir(self) -> Path:
        return self.data_dir / "valkey"

    @property
    def binds_beyond_loopback(self) -> bool:
        if self.host in {"localhost", ""}:
            return self.host == ""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True
