"""How many entries a partition's stream ever took (``entries-added``), read
without its first and last entries.

``XINFO STREAM`` answers with the stream's first and last entries beside its
counters: with 1 MB events a once-a-second sampler made Valkey send ~2 MB a
second and the client parse it, for one integer. The script below reads the
counter on the server and answers only it.
"""

from __future__ import annotations

from typing import Any

#: KEYS[1] a stream. Returns its ``entries-added`` (its length on servers before
#: Redis 7, which do not keep the counter), or -1 when there is no such stream.
ENTRIES_ADDED = """
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return -1 end
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then return info[i + 1] end
end
return redis.call('XLEN', KEYS[1])
"""


async def entries_added(redis: Any, key: str) -> int | None:
    """The stream's lifetime entry count, or None when it does not exist."""
    added = int(await redis.register_script(ENTRIES_ADDED)(keys=[key]))
    return None if added < 0 else added
