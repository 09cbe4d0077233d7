"""A LangGraph checkpoint saver on chatlog's log.

::

    async with ChatlogSaver.from_conn_string("./data", project="Blog-Project") as saver:
        graph = builder.compile(checkpointer=saver)

    with ChatlogSaver.from_conn_string_sync("redis://...", project="Blog-Project") as saver:
        graph.invoke(inputs, {"configurable": {"thread_id": "t-1"}})   # blocking use

Every checkpoint is a ``langgraph.checkpoint`` event and every call of
``put_writes`` a ``langgraph.writes`` event of the checkpoint's aggregate
``<project>/langgraph/<thread_id>/<checkpoint_ns>/<checkpoint_id>`` (so
deleting checkpoints deletes whole aggregates), with the serialised values
as the event's binary ``blob``; they replay, archive and migrate with the rest of
the log, and conversation projections skip them. Small index keys beside
the log (in the partition's slot) find a thread's checkpoints by namespace
and id; each operation is one atomic script.

Reads find entries that the archiver moved out of Redis in the archive tier
(the index keys stay in Redis). Appends are acknowledged as the store's are
(under ``ack=replicated``, once replicated, moving the committed position).
Deleting (``delete_thread``, ``prune``, ``delete_for_runs``) erases the
checkpoints from every tier (Redis, archive segments, the append-only file)
through :mod:`chatlog.erasure`, leaving a tombstone without content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatlog.events import LangGraphCheckpoint, LangGraphWrites
from chatlog.eventstore.scripted import run_append_script, run_script
from chatlog.eventstore.store import EventStore
from chatlog.integrations._archived import archived_entries
from chatlog.integrations._langgraph_erase import Deleter
from chatlog.integrations._langgraph_reindex import reindex
from chatlog.integrations._langgraph_store import (
    PUT,
    READ,
    WRITES,
    Keys,
    aggregate_id,
    body_parts,
    configurable,
    text,
)
from chatlog.integrations._runtime import (
    LoopThread,
    event_body,
    open_log,
    project_key,
    run_blocking,
)
from chatlog.settings import Settings


class ChatlogSaver(BaseCheckpointSaver[int]):
    """LangGraph checkpoints and pending writes as events in chatlog's log.

    Build it with :meth:`from_conn_string` (async) or :meth:`from_conn_string_sync`
    (blocking code), or ``ChatlogSaver(store, project=...)`` on an open
    :class:`~chatlog.eventstore.EventStore`. The async methods run on the
    loop the store was opened on; the blocking ones (``get_tuple``, ``put``...)
    hand their work to that loop from another thread and raise if called on
    the loop's own thread (waiting there would deadlock).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        project: str | None,
        serde: SerializerProtocol | None = None,
        namespace: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if settings is None and namespace is not None:
            settings_ns = Settings(project_namespace=namespace)
        else:
            settings_ns = settings or Settings()
        self.store = store
        self.project = project_key(project, settings_ns)
        self.keys = Keys(store, self.project)
        redis: Any = store.redis
        self._put_script = redis.register_script(PUT)
        self._writes_script = redis.register_script(WRITES)
        self._read_script = redis.register_script(READ)
        #: Deletes by erasing (with ``settings``: those of its data dir's archive).
        self.deleter = Deleter(store, self.project, self.keys, settings)
        self.loop = loop or asyncio.get_running_loop()

    # -- construction ------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls,
        url_or_data_dir: str | Path,
        *,
        project: str | None,
        serde: SerializerProtocol | None = None,
        key_prefix: str | None = None,
    ) -> AsyncIterator[ChatlogSaver]:
        """A saver on the log at a Redis/Valkey URL or under a chatlog data dir."""
        async with open_log(url_or_data_dir, key_prefix=key_prefix) as (store, settings):
            yield cls(store, project=project, serde=serde, settings=settings)

    @classmethod
    @contextlib.contextmanager
    def from_conn_string_sync(
        cls,
        url_or_data_dir: str | Path,
        *,
        project: str | None,
        serde: SerializerProtocol | None = None,
        key_prefix: str | None = None,
    ) -> Iterator[ChatlogSaver]:
        """Like :meth:`from_conn_string`, for blocking code: the saver's loop runs on a
        thread of its own while the block runs."""
        runner = LoopThread("chatlog-langgraph")
        opened = open_log(url_or_data_dir, key_prefix=key_prefix)
        try:
            store, settings = runner.run(opened.__aenter__())
            try:

                async def make() -> ChatlogSaver:
                    return cls(store, project=project, serde=serde, settings=settings)

                yield runner.run(make())
            finally:
                runner.run(opened.__aexit__(None, None, None))
        finally:
            runner.stop()

    # -- async API -------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        return await self._read(thread_id, ns, get_checkpoint_id(config) or "")

    async def _read(self, thread_id: str, ns: str, checkpoint_id: str) -> CheckpointTuple | None:
        k = self.keys
        reply = await run_script(
            self.store, self._read_script,
            [k.log, k.cps(thread_id, ns), k.positions(thread_id, ns)],
            [checkpoint_id, k.writes_prefix(thread_id), ns],
        )
        if not reply:
            return None
        cid, (cp_pos, flat), entries, refs = text(reply[0]), reply[1], reply[2], reply[3]
        gone = [pos for pos, fields in [(cp_pos, flat), *entries] if fields is None]
        if gone:  # moved to the archive (or deleted meanwhile: then absent there too)
            found = await archived_entries(self.store, k.partition, gone)
            flat = flat if flat is not None else found.get(text(cp_pos))
            if flat is None:
                return None
            entries = [(pos, f if f is not None else found.get(text(pos)))
                       for pos, f in entries]
        data, blob = body_parts(flat)
        saved = self.serde.loads_typed((data["serde"], blob))
        checkpoint: Checkpoint = saved["checkpoint"]
        metadata: CheckpointMetadata = saved["metadata"]
        writes = self._pending_writes(entries, refs)
        config: RunnableConfig = {"configurable": {
            "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}
        parent = data.get("parent_id")
        parent_config: RunnableConfig | None = (
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                              "checkpoint_id": parent}} if parent else None
        )
        return CheckpointTuple(config, checkpoint, metadata, parent_config, writes)

    def _pending_writes(self, entries: list[Any], refs: list[Any]) -> list[tuple[str, str, Any]]:
        decoded: dict[str, tuple[dict[str, Any], list[Any]]] = {}
        for pos, flat in entries:
            if flat is None:
                continue
            data, blob = body_parts(flat)
            decoded[text(pos)] = (data, self.serde.loads_typed((data["serde"], blob)))
        rows: list[tuple[tuple[str, str, int], tuple[str, str, Any]]] = []
        for pos, k in refs:
            got = decoded.get(text(pos))
            if got is None:
                continue
            data, values = got
            i = int(k)
            rows.append((
                (data.get("task_path", ""), data["task_id"], int(data["idx"][i])),
                (data["task_id"], data["channels"][i], values[i]),
            ))
        rows.sort(key=lambda r: r[0])
        return [w for _, w in rows]

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        redis: Any = self.store.redis
        k = self.keys
        conf = configurable(config) if config else {}
        if "thread_id" in conf:
            threads = [str(conf["thread_id"])]
        else:
            threads = sorted(text(t) for t in await redis.smembers(k.threads))
        before_id = get_checkpoint_id(before) if before else None
        only_id = get_checkpoint_id(config) if config else None
        left = limit
        for thread_id in threads:
            if "checkpoint_ns" in conf:
                namespaces = [str(conf["checkpoint_ns"])]
            else:
                namespaces = sorted(text(n) for n in await redis.smembers(k.ns_set(thread_id)))
            found: list[tuple[str, str]] = []
            for ns in namespaces:
                top = f"({before_id}" if before_id else "+"
                for cid in await redis.zrevrangebylex(k.cps(thread_id, ns), top, "-"):
                    if only_id is None or text(cid) == only_id:
                        found.append((text(cid), ns))
            found.sort(reverse=True)
            for cid, ns in found:
                if left is not None and left <= 0:
                    return
                tup = await self._read(thread_id, ns, cid)
                if tup is None:
                    continue
                if filter and not all(tup.metadata.get(key) == v for key, v in filter.items()):
                    continue
                if left is not None:
                    left -= 1
                yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        parent_id = conf.get("checkpoint_id")
        cid = str(checkpoint["id"])
        meta = get_checkpoint_metadata(config, metadata)
        kind, blob = self.serde.dumps_typed({"checkpoint": checkpoint, "metadata": meta})
        eid, type_, aggregate, body = event_body(
            self.project, "langgraph", aggregate_id(thread_id, ns, cid),
            LangGraphCheckpoint(thread_id=thread_id, ns=ns, checkpoint_id=cid,
                                parent_id=parent_id, serde=kind),
            blob,
        )
        k = self.keys
        run_id = meta.get("run_id")
        run_key = k.run(str(run_id)) if run_id is not None else k.log
        await run_append_script(
            self.store, self._put_script,
            [k.log, k.versions, k.index(aggregate), k.ns_set(thread_id),
             k.cps(thread_id, ns), k.positions(thread_id, ns), k.threads, run_key,
             k.members(thread_id)],
            [eid, type_, aggregate, body, ns, cid, thread_id,
             f"{thread_id}\0{ns}\0{cid}" if run_id is not None else ""],
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": cid}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        conf = configurable(config)
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        idx = [WRITES_IDX_MAP.get(channel, i) for i, (channel, _) in enumerate(writes)]
        channels = [channel for channel, _ in writes]
        kind, blob = self.serde.dumps_typed([value for _, value in writes])
        eid, type_, aggregate, body = event_body(
            self.project, "langgraph", aggregate_id(thread_id, ns, cid),
            LangGraphWrites(thread_id=thread_id, ns=ns, checkpoint_id=cid, task_id=task_id,
                            task_path=task_path, idx=idx, channels=channels, serde=kind),
            blob,
        )
        replace = all(channel in WRITES_IDX_MAP for channel in channels)
        args: list[Any] = [eid, type_, aggregate, body, "1" if replace else "0",
                           f"{ns}\0{cid}"]
        for i, j in enumerate(idx):
            args.extend((f"{task_id}\0{j}", i))
        k = self.keys
        await run_append_script(
            self.store, self._writes_script,
            [k.log, k.versions, k.index(aggregate), k.writes(thread_id, ns, cid),
             k.members(thread_id)],
            args,
        )

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete the thread's checkpoints and writes: erased from every tier."""
        await self.deleter.delete_thread(str(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs made."""
        redis: Any = self.store.redis
        by_thread: dict[str, list[tuple[str, str]]] = {}
        for run_id in run_ids:
            for member in await redis.smembers(self.keys.run(str(run_id))):
                thread_id, ns, cid = text(member).split("\0", 2)
                if (ns, cid) not in by_thread.setdefault(thread_id, []):
                    by_thread[thread_id].append((ns, cid))
        await self.deleter.delete(list(by_thread.items()))
        for run_id in run_ids:
            await redis.delete(self.keys.run(str(run_id)))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: only each namespace's newest checkpoint (and its writes)
        stays; ``delete``: the threads go entirely. Erased from every tier."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}; use keep_latest or delete")
        redis: Any = self.store.redis
        plan: list[tuple[str, list[tuple[str, str]] | None]] = []
        for thread_id in dict.fromkeys(map(str, thread_ids)):
            if strategy == "delete":
                plan.append((thread_id, None))
                continue
            targets: list[tuple[str, str]] = []
            for ns in await redis.smembers(self.keys.ns_set(thread_id)):
                cids = await redis.zrevrangebylex(self.keys.cps(thread_id, text(ns)), "+", "-")
                targets.extend((text(ns), text(c)) for c in cids[1:])
            plan.append((thread_id, targets))
        await self.deleter.delete(plan)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (oldest first) and its writes to another thread."""
        redis: Any = self.store.redis
        k = self.keys
        src, dst = str(source_thread_id), str(target_thread_id)
        for ns in sorted(text(n) for n in await redis.smembers(k.ns_set(src))):
            for cid in map(text, await redis.zrangebylex(k.cps(src, ns), "-", "+")):
                tup = await self._read(src, ns, cid)
                if tup is None:
                    continue
                parent = tup.parent_config
                config: RunnableConfig = {"configurable": {
                    "thread_id": dst, "checkpoint_ns": ns,
                    **({"checkpoint_id": get_checkpoint_id(parent)} if parent else {})}}
                stored = await self.aput(config, tup.checkpoint, tup.metadata, {})
                await self._copy_writes(src, dst, ns, cid, stored)

    async def _copy_writes(
        self, src: str, dst: str, ns: str, cid: str, stored: RunnableConfig
    ) -> None:
        redis: Any = self.store.redis
        groups: dict[str, list[int]] = {}
        for value in (await redis.hgetall(self.keys.writes(src, ns, cid))).values():
            pos, k = text(value).split(" ", 1)
            groups.setdefault(pos, []).append(int(k))
        ordered = sorted(groups, key=lambda p: tuple(int(x) for x in p.split("-")))
        hot = {}
        for pos in ordered:
            entries = await redis.xrange(self.keys.log, pos, pos)
            if entries:
                hot[pos] = [x for kv in entries[0][1].items() for x in kv]
        cold = await archived_entries(self.store, self.keys.partition,
                                      [p for p in ordered if p not in hot])
        for pos in ordered:
            flat = hot.get(pos) or cold.get(pos)
            if flat is None:
                continue
            data, blob = body_parts(flat)
            values = self.serde.loads_typed((data["serde"], blob))
            keep = sorted(groups[pos])
            await self.aput_writes(
                stored, [(data["channels"][i], values[i]) for i in keep], data["task_id"],
                data.get("task_path", ""),
            )

    async def areindex(self) -> int:
        """Rebuild this project's index keys from its events in the log; how many it read.

        For a log copied by ``chatlog migrate``, which carries the events but
        not the saver's index keys. Idempotent.
        """
        return await reindex(self.store, self.keys, self.project, self.serde)

    def reindex(self) -> int:
        return run_blocking(self.loop, self.areindex(), "ChatlogSaver.reindex")

    # -- blocking API ------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return run_blocking(self.loop, self.aget_tuple(config), "ChatlogSaver.get_tuple")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before,
                                                limit=limit)]

        yield from run_blocking(self.loop, collect(), "ChatlogSaver.list")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return run_blocking(self.loop, self.aput(config, checkpoint, metadata, new_versions),
                            "ChatlogSaver.put")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        run_blocking(self.loop, self.aput_writes(config, writes, task_id, task_path),
                     "ChatlogSaver.put_writes")

    def delete_thread(self, thread_id: str) -> None:
        run_blocking(self.loop, self.adelete_thread(thread_id), "ChatlogSaver.delete_thread")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_blocking(self.loop, self.adelete_for_runs(run_ids), "ChatlogSaver.delete_for_runs")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        run_blocking(self.loop, self.acopy_thread(source_thread_id, target_thread_id),
                     "ChatlogSaver.copy_thread")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        run_blocking(self.loop, self.aprune(thread_ids, strategy=strategy), "ChatlogSaver.prune")


__all__ = ["ChatlogSaver"]
