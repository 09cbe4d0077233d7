"""Rebuilding the LangGraph saver's index keys from its events (after ``chatlog migrate``)."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatlog.eventstore.codec import START
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.integrations._langgraph_store import Keys


async def reindex(store: EventStore, k: Keys, project: ProjectKey,
                  serde: SerializerProtocol) -> int:
    """Rebuild ``project``'s index keys from its events in the log (both tiers); how
    many it read. Idempotent."""
    redis: Any = store.redis
    after, seen = START, 0
    while batch := await store.read(k.partition, after, 1000):
        after = batch[-1].position
        pipe = redis.pipeline(transaction=False)
        for event in batch:
            if event.aggregate_type != "langgraph" or event.project != project.key:
                continue
            seen += 1
            d = event.data
            thread_id, ns, cid = d["thread_id"], d["ns"], d["checkpoint_id"]
            pipe.sadd(k.members(thread_id), f"{ns}\0{cid}")
            if event.type == "langgraph.checkpoint":
                pipe.sadd(k.ns_set(thread_id), ns)
                pipe.zadd(k.cps(thread_id, ns), {cid: 0})
                pipe.hset(k.positions(thread_id, ns), cid, event.position)
                pipe.sadd(k.threads, thread_id)
                saved = serde.loads_typed((d["serde"], event.blob or b""))
                run_id = saved["metadata"].get("run_id")
                if run_id is not None:
                    pipe.sadd(k.run(str(run_id)), f"{thread_id}\0{ns}\0{cid}")
            elif event.type == "langgraph.writes":
                replace = all(c in WRITES_IDX_MAP for c in d["channels"])
                wkey = k.writes(thread_id, ns, cid)
                for i, j in enumerate(d["idx"]):
                    field, value = f"{d['task_id']}\0{j}", f"{event.position} {i}"
                    if replace:
                        pipe.hset(wkey, field, value)
                    else:
                        pipe.hsetnx(wkey, field, value)
        await pipe.execute()
    return seen
