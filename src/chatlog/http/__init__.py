"""The HTTP API on aiohttp: appends, queries, workflows, replay and SSE, problem+json errors."""

from chatlog.http._state import STATE, AppState, Services, ServiceUnavailable
from chatlog.http.app import create_app, endpoints, running
from chatlog.http.auth import Principal, TokenRegistry

__all__ = [
    "STATE",
    "AppState",
    "Principal",
    "ServiceUnavailable",
    "Services",
    "TokenRegistry",
    "create_app",
    "endpoints",
    "running",
]
