"""chatlog: an event log for AI-agent platforms.

Every chat message and workflow transition is an event appended to a Redis
Stream; SQLite read models, orchestrator waits and replay are derived from it.
"""

from chatlog.errors import ChatlogError

__version__ = "0.1.0"

__all__ = ["ChatlogError", "__version__"]
