"""Deterministic server cost: Valkey's user-space instructions (callgrind) per replayed
event, per script variant. usage: cg.py SRC... (each a src dir)"""
import asyncio, sys, os, glob, subprocess, time, tempfile, re
sys.path.insert(0, "bench")
from pathlib import Path
import redis
import bench_append_script as B
from _common import valkey_server
from chatlog.eventstore.embedded import valkey_binary
srcs = sys.argv[1:]
variants = {s: B.scripts_of(Path(s)) for s in srcs}
own = B.scripts_of(Path("src"))
lib = Path("src/chatlog/eventstore/append.lua").read_text()
def v(body, with_lib=True): return {"one": (lib + "\n" if with_lib else "") + body, "many": own["many"]}
if os.environ.get("PARTS"):
    variants.update({
 "TIME+match": v("local iw, ow, buckets, legacy = string.match(ARGV[3], '^(%d+) (%d+) (%d+) (%d)$') local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) return {'ok'}"),
 "match": v("local iw, ow, buckets, legacy = string.match(ARGV[3], '^(%d+) (%d+) (%d+) (%d)$') return {'ok'}"),
 "ids no fam": v("local st = ids(ARGV[3], KEYS[1]) return {'ok'}"),
 "ids+o": v("local st = ids(ARGV[3], KEYS[1]) local x = st.o return {'ok'}"),
 "ids+o+cur": v("local st = ids(ARGV[3], KEYS[1]) local x = st.o.cur return {'ok'}"),
 "tostring x10": v("local g = 29650000 for i = 1, 10 do local s = 'a' .. (g + i) end return {'ok'}"),
 "table8 x10": v("for i = 1, 10 do local t = {a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8} end return {'ok'}"),
    })
with valkey_server() as server:
    w = asyncio.run(B.record_calls(server.url, 1000, 5, 300))
tmp = Path(tempfile.mkdtemp(prefix="cg", dir="/tmp/lean/cg"))
sock = tmp / "v.sock"
out = tmp / "cg.out"
proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
    str(valkey_binary()), "--dir", str(tmp), "--appendonly", "yes", "--appendfsync", "always",
    "--save", "", "--port", "0", "--unixsocket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        if sock.exists(): break
        time.sleep(0.1)
    time.sleep(0.5)
    r = redis.Redis(unix_socket_path=str(sock), socket_timeout=600)
    r.ping()
    shas = {"one": r.script_load(own["one"]), "many": r.script_load(own["many"])}
    def total():
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], stdout=subprocess.DEVNULL)
        files = sorted(glob.glob(str(out) + ".*"), key=os.path.getmtime)
        text = open(files[-1]).read()
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        return int(m.group(1))
    for wl in (["append_one, one at a time"] if os.environ.get("PARTS") else ["append_one, one at a time", "batches of 100", "256 concurrent append_one"]):
        calls = w[wl]
        ev = sum(B.events_in(c, shas["many"]) for c in calls)
        for rep in range(int(os.environ.get("REPS", "2"))):
            for name, scripts in variants.items():
                r.flushall()
                new = {k: r.script_load(t) for k, t in scripts.items()}
                swap = {shas[k]: new[k] for k in shas}
                for c in calls[:20]:
                    r.execute_command("EVALSHA", swap[c[1]], *c[2:])
                r.flushall()
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], stdout=subprocess.DEVNULL)
                for start in range(0, len(calls), 50):
                    pipe = r.pipeline(transaction=False)
                    for c in calls[start:start + 50]:
                        pipe.execute_command("EVALSHA", swap[c[1]], *c[2:])
                    pipe.execute()
                ir = total()
                print(f"{wl:28s} {name:28s} {ir / ev:10,.0f} instructions/event ({len(calls)} calls, {ev} events)", flush=True)
finally:
    proc.terminate(); proc.wait()
