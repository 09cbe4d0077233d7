"""Bearer tokens scoped to projects, from ``CHATLOG_TOKENS_FILE``.

The file is JSON::

    {"tokens": [
      {"token": "s3cret-admin", "name": "ops", "admin": true},
      {"token": "s3cret-blog", "name": "blog-agent",
       "read": ["Blog-Project"], "write": ["Blog-Project"]},
      {"token": "s3cret-dpo", "name": "privacy", "erase": ["Blog-Project"]}
    ]}

Project names are normalised with the identity rules, so ``"blog-project"``
and ``"Blog-Project"`` are one scope; a write scope implies read. ``admin``
may do everything; ``erase`` lists the projects a token may erase (only
admin and those may). Without a tokens file every caller is admin, which
``chatlog serve`` allows only on a loopback address (and the app answers only
loopback clients then).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chatlog.errors import ConfigError, Forbidden, Unauthorized
from chatlog.http._server import ChatlogRequestHandler
from chatlog.identity import ProjectKey, normalize_project_id

#: What a client sends after ``Bearer ``: printable ASCII, no spaces (the client
#: checks its token with it too).
TOKEN_PATTERN = r"^[!-~]+$"
#: A project named in a scope: not blank (``""`` would name the system scope).
_Scope = Annotated[str, Field(pattern=r"\S")]


class TokenEntry(BaseModel):
    """One token of the tokens file (JSON types as they are: ``"yes"`` is not true)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=8, pattern=TOKEN_PATTERN)
    name: str = ""
    admin: bool = False
    read: list[_Scope] = Field(default_factory=list)
    write: list[_Scope] = Field(default_factory=list)
    #: Projects this token may erase (``DELETE`` of the project or its threads).
    erase: list[_Scope] = Field(default_factory=list)


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry]

    @model_validator(mode="after")
    def _distinct(self) -> TokensFile:
        """One entry per token: a second one silently replaced the first."""
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.tokens, 1):
            if entry.token in seen:
                raise ValueError(f"tokens {seen[entry.token]} and {i} are the same token; "
                                 "give each its own, or merge their scopes")
            seen[entry.token] = i
        return self


@dataclass(frozen=True)
class Principal:
    """Who is asking, and which projects they may read and write."""

    name: str
    admin: bool = False
    read: frozenset[uuid.UUID] = field(default_factory=frozenset)
    write: frozenset[uuid.UUID] = field(default_factory=frozenset)
    erase: frozenset[uuid.UUID] = field(default_factory=frozenset)

    def can_read(self, project: uuid.UUID) -> bool:
        return self.admin or project in self.read or project in self.write

    def can_write(self, project: uuid.UUID) -> bool:
        return self.admin or project in self.write

    @property
    def readable(self) -> frozenset[uuid.UUID] | None:
        """The projects this caller may read; None = all of them."""
        return None if self.admin else self.read | self.write

    def require_read(self, project: ProjectKey) -> None:
        if not self.can_read(project.key):
            raise Forbidden(f"this token may not read project {project.display!r}")

    def require_erase(self, project: ProjectKey) -> None:
        if not (self.admin or project.key in self.erase):
            raise Forbidden(f"this token may not erase project {project.display!r} "
                            "(it needs admin, or the project in its 'erase' list)")

    def require_write(self, project: ProjectKey) -> None:
        if not self.can_write(project.key):
            raise Forbidden(f"this token may not write to project {project.display!r}")


OPEN_ACCESS = Principal(name="open access (no tokens configured)", admin=True)


def _digest(token: str) -> bytes:
    # A header's bytes that are not UTF-8 arrive as surrogate escapes: they make
    # a digest no token has (401), never an encoding error.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenRegistry:
    """Looks tokens up; ``open`` (no tokens configured) admits loopback callers as admin."""

    def __init__(self, principals: dict[bytes, Principal] | None = None) -> None:
        self._by_digest = principals
        #: True when no tokens are configured: every loopback caller is admin.
        self.open = principals is None

    @classmethod
    def from_entries(cls, entries: Iterable[TokenEntry], namespace: uuid.UUID) -> TokenRegistry:
        principals: dict[bytes, Principal] = {}
        for i, e in enumerate(entries):
            def keys(names: list[str]) -> frozenset[uuid.UUID]:
                return frozenset(normalize_project_id(n, namespace).key for n in names)

            principals[_digest(e.token)] = Principal(
                name=e.name or f"token #{i + 1}", admin=e.admin,
                read=keys(e.read), write=keys(e.write), erase=keys(e.erase),
            )
        return cls(principals)

    @classmethod
    def load(cls, path: Path | None, namespace: uuid.UUID) -> TokenRegistry:
        """The registry of the tokens file at ``path``; open access when ``path`` is None."""
        if path is None:
            return cls(None)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {path}: {exc.strerror or exc}") from exc
        try:
            parsed = TokensFile.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "file"
            raise ConfigError(
                f"tokens file {path} is invalid at {where}: {first['msg']} "
                '(expected {"tokens": [{"token": "...", "read": [...], "write": [...]}]})'
            ) from exc
        return cls.from_entries(parsed.tokens, namespace)

    def authenticate(self, request: web.Request, *, allow_query: bool = False) -> Principal:
        """The caller of ``request``; raises Unauthorized for a missing or unknown token."""
        if self._by_digest is None:
            if not caller_is_loopback(request):
                raise Unauthorized(
                    "no tokens are configured, so this chatlog answers loopback clients only"
                )
            return OPEN_ACCESS
        token = None
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        elif allow_query:
            token = request.query.get("access_token") or None
        if token is None:
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        principal = self._by_digest.get(_digest(token))
        if principal is None:
            raise Unauthorized("the bearer token is not known")
        return principal


def caller_is_loopback(request: web.Request) -> bool:
    """True when ``request`` came over loopback (or a unix socket).

    Asked once per connection where the connection can keep the answer
    (:class:`~chatlog.http._server.ChatlogRequestHandler`): the peer's address is a
    ``getpeername`` system call per request on uvloop (~2-4 us).
    """
    protocol = request.protocol
    if not isinstance(protocol, ChatlogRequestHandler):
        return _is_loopback(request.remote)
    known = protocol.peer_is_loopback
    if known is None:
        known = protocol.peer_is_loopback = _is_loopback(request.remote)
    return known


@functools.lru_cache(maxsize=1024)
def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return True  # a unix socket: only local processes can connect
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False
