import asyncio, sys, time, os, statistics, resource
sys.path.insert(0, "/work/wt/lean/bench")
from _common import valkey_server, reset_server
import redis.asyncio as aioredis
from chatlog.eventstore import EventStore
from chatlog.eventstore.lean import LeanConnection
import bench_append as ba
N = int(os.environ.get("N", "1500"))
LOOP = os.environ.get("LOOP", "asyncio")
async def timed(name, fn, res):
    cpu = time.process_time(); t = time.perf_counter()
    for i in range(N):
        await fn(i)
    cpu = time.process_time() - cpu; t = time.perf_counter() - t
    res.setdefault(name, []).append((cpu / N * 1e6, N / t))
async def main(url):
    r = aioredis.from_url(url)
    fields = ba.raw_fields()
    lean = LeanConnection.from_url(url)
    args = [x for kv in fields.items() for x in kv]
    store = await EventStore.open(url)
    slean = store._topology.lean
    rec = []
    real = slean.evalsha
    async def recording(sha, src, keys, a):
        rec.append((sha, src, keys, a)); return await real(sha, src, keys, a)
    slean.evalsha = recording
    for i in range(N * 4):
        await store.append_one(ba.chat_event(10**6 + i))
    slean.evalsha = real
    await reset_server(url)
    evs = [ba.chat_event(i) for i in range(N * 10)]
    k = [0]; j = [0]
    async def rp(i): await r.xadd("bench:raw", fields)
    async def lx(i): await lean.execute("XADD", "bench:lean", "*", *args)
    async def le(i):
        sha, src, keys, a = rec[j[0]]; j[0] += 1
        await lean.evalsha(sha, src, keys, a)
    async def ap(i):
        k[0] += 1; await store.append_one(evs[k[0]])
    res = {}
    import gc
    if os.environ.get("FREEZE"): gc.freeze()
    if os.environ.get("NOGC"): gc.disable()
    for rnd in range(3):
        for name, f in (("redis-py XADD", rp), ("lean XADD", lx), ("lean EVALSHA rec", le), ("append_one prebuilt", ap)):
            await timed(name, f, res)
    base = [x[0] for x in res["redis-py XADD"]]
    for name, xs in res.items():
        cpus = [x[0] for x in xs]
        print(f"{name:22s} cpu us/op {min(cpus):7.1f} med {statistics.median(cpus):7.1f}  ratio med {statistics.median(a/b for a,b in zip(cpus, base)):.2f}  ops/s {statistics.median(x[1] for x in xs):8.0f}")
    await store.close(); await r.aclose(); await lean.close()
with valkey_server() as server:
    if LOOP == "uvloop":
        import uvloop; uvloop.run(main(server.url))
    else:
        asyncio.run(main(server.url))
