"""Workflow waits with timeouts, durable timers, and jobs with heartbeat leases.

Usage (``chatlog serve`` does the same through the HTTP app's lifecycle)::

    orchestrator = Orchestrator(store, settings)
    await orchestrator.start()      # tailers catch up, open waits resume, timer runs
    view = await orchestrator.create_workflow(project, name="post")
    try:
        started = await orchestrator.wait_for_start(project, view.workflow_id)
    except WaitTimeout as exc:      # the log now says timed_out, then failed
        ...
    await orchestrator.stop()

Every transition is an event in the workflow's aggregate, appended with
``expected_version``; an invalid command raises ``InvalidTransition`` (409)
naming the current state. Jobs: ``enqueue_job`` and a :class:`Worker` per
process (``chatlog worker`` runs one with a demo handler).
"""

from chatlog.events import TERMINAL, State
from chatlog.orchestrator.job_admin import list_dead_letters
from chatlog.orchestrator.jobs import DeadLetter, Handler, Job
from chatlog.orchestrator.machine import (
    TRANSITIONS,
    Command,
    WorkflowState,
    decide,
    fold,
)
from chatlog.orchestrator.service import Orchestrator, timeout_reason
from chatlog.orchestrator.views import HistoryEntry, WorkflowView
from chatlog.orchestrator.worker import Worker

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
