import asyncio, sys, os
sys.path.insert(0, "/work/wt/lean/bench")
import bench_append as ba
from chatlog.eventstore import EventStore
from chatlog.eventstore.lean import LeanConnection
url = sys.argv[1]; mode = sys.argv[2]; N = 2000
async def main():
    store = await EventStore.open(url)
    lean = LeanConnection.from_url(url)
    args = [x for kv in ba.raw_fields().items() for x in kv]
    evs = [ba.chat_event(i) for i in range(N)]
    await lean.execute("PING"); await store.append_one(ba.chat_event(10**7))
    os.write(2, b"START\n")
    if mode == "append":
        for e in evs: await store.append_one(e)
    else:
        for e in evs: await lean.execute("XADD", "bench:lean", "*", *args)
    os.write(2, b"END\n")
    await store.close(); await lean.close()
asyncio.run(main())
