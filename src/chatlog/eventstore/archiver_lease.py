"""The archiver's lease: one archiver per partition at a time, with a fencing token.

Redis keys: ``<prefix>:{p<N>}:archiver`` the lease (``"<token> <holder>"``, expires)
and ``<prefix>:{p<N>}:archiver:fence`` the last fencing token handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from chatlog.errors import ArchiveConflict, StoreUnavailable
from chatlog.eventstore.connection import UNAVAILABLE

if TYPE_CHECKING:
    from chatlog.eventstore.store import EventStore

__all__ = ["ACQUIRE", "RENEW", "Lease", "holding_lease", "renewed"]

#: Errors after which the next renewal simply tries again.
_RETRYABLE: tuple[type[BaseException], ...] = (StoreUnavailable, *UNAVAILABLE)

#: KEYS[1] lease, KEYS[2] fence counter; ARGV[1] holder, ARGV[2] ttl ms.
#: Returns the holder's fencing token, or 0 when another holder has the lease.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ' ', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(cur, 1, sep - 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

#: KEYS[1] lease; ARGV[1] "<token> <holder>", ARGV[2] ttl ms (0: release).
#: Returns 1 when the lease was still that holder's (renewed or released), else 0.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class Lease:
    """One archiver per partition: a Redis key with a fencing token in the partition's slot.

    :meth:`acquire` gives a token that grows with every new holder; the archive
    refuses to publish with a token smaller than one that published before.
    """

    def __init__(self, store: EventStore, partition: int, *, ttl: float = 30.0,
                 holder: str | None = None) -> None:
        tag = store.keys.tag(partition)
        self.key = f"{tag}:archiver"
        self.fence_key = f"{tag}:archiver:fence"
        self.redis = store.redis
        self.ttl_ms = max(int(ttl * 1000), 1)
        self.holder = holder or uuid.uuid4().hex
        self.token = 0
        self._acquire = store.redis.register_script(ACQUIRE)
        self._renew = store.redis.register_script(RENEW)

    async def acquire(self) -> int:
        """Take (or keep) the lease; its fencing token, or 0 when another holder has it."""
        self.token = int(await self._acquire(keys=[self.key, self.fence_key],
                                             args=[self.holder, self.ttl_ms]))
        return self.token

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours (expired, taken over)."""
        if not self.token:
            return False
        ok = int(await self._renew(keys=[self.key],
                                   args=[f"{self.token} {self.holder}", self.ttl_ms]))
        if not ok:
            self.token = 0
        return bool(ok)

    async def release(self) -> None:
        if self.token:
            await self._renew(keys=[self.key], args=[f"{self.token} {self.holder}", 0])
            self.token = 0


@contextlib.asynccontextmanager
async def holding_lease(
    store: EventStore, partition: int, *, ttl: float = 30.0, wait: float = 120.0
) -> AsyncIterator[int]:
    """Hold ``partition``'s archiver lease for the block (waiting up to ``wait`` s for
    a running pass to end), renewed while held; yields its fencing token.

    No archiver publishes while it is held, and passing the token to
    :meth:`Archive.delete_before` (``fence=``) fences out any older holder: the way
    to change a partition's archive (a deliberate deletion) beside running
    ``chatlog serve`` nodes.
    """
    lease = Lease(store, partition, ttl=ttl)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.05
    while not await lease.acquire():
        if loop.time() > deadline:
            raise ArchiveConflict(
                f"partition {partition}: an archiver held its lease for {wait:g} s; "
                "try again when its pass has ended"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)

    try:
        async with renewed(lease, ttl):
            yield lease.token
    finally:
        with contextlib.suppress(*_RETRYABLE):
            await lease.release()


@contextlib.asynccontextmanager
async def renewed(lease: Lease, ttl: float) -> AsyncIterator[None]:
    """Renew ``lease`` every ``ttl / 3`` s in the background for the block: a holder
    that stops (killed, hung) loses it after ``ttl``; a slow one keeps it."""

    async def renew() -> None:
        while lease.token:
            await asyncio.sleep(ttl / 3)
            with contextlib.suppress(*_RETRYABLE):
                await lease.renew()

    renewer = asyncio.get_running_loop().create_task(renew())
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_RETRYABLE):
            await renewer
