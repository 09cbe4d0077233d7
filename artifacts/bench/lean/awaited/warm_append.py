import asyncio, sys, time, cProfile, pstats
sys.path.insert(0, "/work/wt/lean/bench")
from _common import valkey_server
from chatlog.eventstore import EventStore
import bench_append as ba
async def main(url):
    store = await EventStore.open(url)
    slean = store._topology.lean
    reply = [b"ok", b"1700000000000-0", 1]
    async def fake(sha, src, keys, a): return reply
    slean.evalsha = fake
    evs = [ba.chat_event(i) for i in range(20000)]
    for e in evs[:1000]: await store.append_one(e)
    t = time.perf_counter()
    for e in evs: await store.append_one(e)
    print("warm append_one w/o IO us", (time.perf_counter()-t)/len(evs)*1e6)
    pr = cProfile.Profile(); pr.enable()
    for e in evs: await store.append_one(e)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(18)
    await store.close()
with valkey_server() as server:
    asyncio.run(main(server.url))
