"""Whether a Valkey function (FUNCTION LOAD + FCALL) runs an append-like script
cheaper than EVALSHA: the same Lua body (HINCRBY + XADD of a 200-byte body +
RPUSH), 256 concurrent calls over one lean connection, on a fresh
embedded-default Valkey (appendfsync always), the two alternating.

Prints calls/s and the client's and the server's CPU per call for each. A
probe for the lean-path issue (is FCALL a lever for the append scripts?), not
a benchmark with goals. Stop-26 run: no difference beyond noise (server 11.8-15.0
us per EVALSHA against 13.0-13.2 per FCALL; 59-72k against 66-67k calls/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from _common import valkey_server
from chatlog.eventstore.lean import LeanConnection

BODY = (
    "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], 1) "
    "redis.call('XADD', KEYS[2], '*', 'a', ARGV[1], 'v', v, 'b', ARGV[2]) "
    "redis.call('RPUSH', KEYS[3], v) return v"
)
LIBRARY = ("#!lua name=probe\nredis.register_function('append_like', "
           f"function(KEYS, ARGV) {BODY} end)")


def server_cpu(pid: int) -> float:
    """CPU seconds the server has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(conn: LeanConnection, command: tuple[str, ...], n: int, concurrency: int,
                  pid: int) -> tuple[float, float, float]:
    """Calls/s, client and server CPU per call (us) of ``n`` calls of ``command``."""
    body = "x" * 200
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < n:
            sent += 1
            aggregate = f"agg{sent % 1000}"
            await conn.execute(*command, 3, "v", "log", f"idx:{aggregate}", aggregate, body)

    cpu, server, start = time.process_time(), server_cpu(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return (n / wall, (time.process_time() - cpu) / n * 1e6,
            (server_cpu(pid) - server) / n * 1e6)


async def main(args: argparse.Namespace) -> None:
    with valkey_server() as valkey:
        pid = int(valkey.pidfile.read_text())
        conn = LeanConnection.from_url(valkey.url)
        try:
            sha = (await conn.execute("SCRIPT", "LOAD", BODY)).decode()
            await conn.execute("FUNCTION", "LOAD", "REPLACE", LIBRARY)
            modes = {"EVALSHA": ("EVALSHA", sha), "FCALL": ("FCALL", "append_like")}
            print(f"{args.calls:,} calls x {args.concurrency} concurrent, {args.reps} reps")
            for rep in range(args.reps):
                for name, command in modes.items():
                    rate, client, server = await measure(conn, command, args.calls,
                                                         args.concurrency, pid)
                    print(f"rep {rep + 1} {name:8s} {rate:9,.0f} calls/s  client {client:5.1f} us"
                          f"  server {server:5.1f} us", flush=True)
        finally:
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40_000, help="calls per mode and rep")
    parser.add_argument("--concurrency", type=int, default=256, help="concurrent callers")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (modes alternate)")
    asyncio.run(main(parser.parse_args()))
