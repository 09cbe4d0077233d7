"""Workflow waits with timeouts, durable timers, and jobs with heartbeat leases."""
