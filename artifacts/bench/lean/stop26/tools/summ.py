import json, sys, glob, re, statistics
rows = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.txt")):
    name = re.sub(r"-\d+\.txt$", "", f.split("/")[-1])
    line = [l for l in open(f) if l.startswith('{"name"')]
    if not line: continue
    d = json.loads(line[0]); res = {r["metric"]: r for r in d["results"]}
    s = res["chatlog append_one, awaited (vs peer)"]; b = res["chatlog append, batches of 100 (vs peer)"]
    c = res["chatlog append_one, awaited: client CPU / redis-py awaited XADD's"]
    raw = res["raw XADD, awaited"]
    rows.setdefault(name, []).append((s["value"], s["ratio"], s["client_cpu_us"], s["server_cpu_us"], c["median"], raw["client_cpu_us"], b["value"], b["ratio"], b["client_cpu_us"], b["server_cpu_us"], d["env"]["loadavg"][0]))
for name, rs in rows.items():
    print(name)
    for r in rs:
        print("  single %6.0f/s x peer %.2f cli %5.1f srv %5.1f cli/redispy %.2f (redispy cli %5.1f) | batch %6.0f/s x peer %.2f cli %4.1f srv %4.1f | load %.1f" % r)
