import asyncio, sys, time, cProfile, pstats
sys.path.insert(0, "/work/wt/lean/bench")
from _common import valkey_server
from chatlog.eventstore import EventStore
import bench_append as ba
async def main(url):
    store = await EventStore.open(url)
    slean = store._topology.lean
    reply = [b"ok"] + [b"1700000000000-0", 1] * 100
    async def fake(sha, src, keys, a): return reply
    slean.evalsha = fake
    batches = [[ba.chat_event(j*100 + k*100) for k in range(100)] for j in range(300)]
    t = time.perf_counter()
    for j in range(300): [ba.chat_event(j + k * 100) for k in range(100)]
    print("build us/event", (time.perf_counter()-t)/30000*1e6)
    for b in batches[:20]: await store.append(b)
    t = time.perf_counter()
    for b in batches: await store.append(b)
    print("warm append w/o IO us/event", (time.perf_counter()-t)/30000*1e6)
    pr = cProfile.Profile(); pr.enable()
    for b in batches: await store.append(b)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(14)
    await store.close()
with valkey_server() as server:
    asyncio.run(main(server.url))
