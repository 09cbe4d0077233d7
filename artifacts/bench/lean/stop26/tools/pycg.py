"""Client instructions per append_one (no I/O: the lean connection answers at once)."""
import asyncio, sys, os
sys.path.insert(0, "bench")
from bench_append import chat_event
from chatlog.eventstore import EventStore
N = int(sys.argv[1]); MODE = sys.argv[2]
async def main():
    store = EventStore.__new__(EventStore)
    url = os.environ["URL"]
    store = await EventStore.open(url)
    await store.append_one(chat_event(1))
    lean = store._topology.lean
    reply = [b"ok", b"1700000000000-0", b"5"]
    breply = [b"ok"] + [x for k in range(100) for x in (b"1700000000000-%d" % k, b"5")]
    async def fake(sha, src, keys, args): return breply if args[3] == 100 else reply
    if MODE != "real":
        lean.evalsha = fake
    if MODE == "redispy":
        import redis.asyncio as aioredis
        from bench_append import raw_fields
        r = aioredis.from_url(url); f = raw_fields()
        await r.xadd("bench:raw", f)
        for i in range(N):
            await r.xadd("bench:raw", f)
        return
    if MODE == "leanxadd":
        from bench_append import raw_fields
        args = [x for kv in raw_fields().items() for x in kv]
        for i in range(N):
            await lean.execute("XADD", "bench:lean", "*", *args)
        return
    if MODE == "build":
        evs = [chat_event(i) for i in range(N)]
    elif MODE in ("one", "real"):
        evs = [chat_event(i) for i in range(N)]
        for ev in evs:
            await store.append_one(ev)
    else:
        bs = [[chat_event(i + k * 100) for k in range(100)] for i in range(N // 100)]
        for b in bs:
            await store.append(b)
asyncio.run(main())
