"""Workflow waits with timeouts, durable timers, and jobs with heartbeat leases."""

from chatlog.orchestrator.jobs import DeadLetter, Handler, Job, Worker, list_dead_letters
from chatlog.orchestrator.machine import (
    TERMINAL,
    TRANSITIONS,
    Command,
    State,
    WorkflowState,
    decide,
    fold,
)
from chatlog.orchestrator.service import Orchestrator, timeout_reason
from chatlog.orchestrator.views import HistoryEntry, WorkflowView

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Command",
    "DeadLetter",
    "Handler",
    "HistoryEntry",
    "Job",
    "Orchestrator",
    "State",
    "Worker",
    "WorkflowState",
    "WorkflowView",
    "decide",
    "fold",
    "list_dead_letters",
    "timeout_reason",
]
