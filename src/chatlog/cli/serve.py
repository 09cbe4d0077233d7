"""``chatlog serve``: the HTTP service, projector and orchestrator in one process."""
