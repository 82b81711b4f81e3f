"""Scale probe (issue 15): provisions N tenants x R resources over the API with
the operator key, restarts the gateway, then measures start-up time, idle RSS,
first use of credentials, and p50/p99 of booking POST, slots and CalDAV
discovery. Needs python3 with aiohttp.

    cargo build --release
    echo -n 'the-operator-key' | target/release/calgate hash-password   # -> HASH
    printf '[admin]\nkey_hash = "%s"\n' "$HASH" > /tmp/scale.toml
    N=10000 R=5 python3 benches/scale_probe.py target/release/calgate /tmp/scale.toml /tmp/scale-data 18222

The data directory is deleted first. Results: BENCHMARKS.md, "Tenants at scale".
"""
import asyncio, aiohttp, os, sys, time, subprocess, json, statistics, base64, shutil

BIN, CONFIG, DATA, PORT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
N = int(os.environ.get("N", "10000")); R = int(os.environ.get("R", "5"))
BASE = f"http://127.0.0.1:{PORT}"
OP = {"Authorization": "Bearer the-operator-key"}

def start():
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "serve", "--config", CONFIG, "--data", DATA, "--listen", f"127.0.0.1:{PORT}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if "listening" in line:
            break
    return p, time.monotonic() - t0

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024

async def run_all(session, reqs, conc=16):
    sem = asyncio.Semaphore(conc); lat = []; bad = []
    async def one(m, url, body, headers):
        async with sem:
            t = time.monotonic()
            async with session.request(m, url, json=body, headers=headers) as r:
                txt = await r.text()
                lat.append((time.monotonic() - t) * 1000)
                if r.status >= 400: bad.append((r.status, txt[:200]))
                return r.status, txt
    res = await asyncio.gather(*[one(*r) for r in reqs])
    return res, lat, bad

def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(len(v) * p / 100))]

async def main():
    shutil.rmtree(DATA, ignore_errors=True)
    p, _ = start()
    async with aiohttp.ClientSession() as s:
        t = time.monotonic()
        reqs = [("PUT", f"{BASE}/api/v1/tenants/t{i}", {"name": f"T{i}", "timezone": "Europe/Paris",
                 "opening_hours": {d: ["09:00-18:00"] for d in ["monday","tuesday","wednesday","thursday","friday"]}}, OP) for i in range(N)]
        _, lat, bad = await run_all(s, reqs)
        el = time.monotonic() - t
        print(f"tenants: {N} in {el:.1f}s = {N/el:.0f}/s; p50 {pct(lat,50):.1f} ms p99 {pct(lat,99):.1f} ms; errors {len(bad)} {bad[:2]}")
        t = time.monotonic()
        reqs = [("PUT", f"{BASE}/api/v1/tenants/t{i}/resources/r{j}", {"kind": "staff", "capacity": 1 + (j == 4) * 2}, OP) for i in range(N) for j in range(R)]
        _, lat, bad = await run_all(s, reqs)
        el = time.monotonic() - t
        print(f"resources: {N*R} in {el:.1f}s = {N*R/el:.0f}/s; p50 {pct(lat,50):.1f} ms p99 {pct(lat,99):.1f} ms; errors {len(bad)} {bad[:2]}")
        # keys and users for 50 tenants (argon2 per secret)
        t = time.monotonic()
        reqs = [("PUT", f"{BASE}/api/v1/tenants/t{i}/api-keys/k", None, OP) for i in range(50)]
        res, lat, bad = await run_all(s, reqs, 4)
        keys = [json.loads(txt)["key"] for _, txt in res]
        reqs = [("PUT", f"{BASE}/api/v1/tenants/t{i}/users/u{i}", {"password": "pw"}, OP) for i in range(50)]
        await run_all(s, reqs, 4)
        print(f"50 keys + 50 users (argon2 each): {time.monotonic()-t:.1f}s")
    p.terminate(); p.wait()
    p, up = start()
    await asyncio.sleep(3)
    print(f"start-up with {N} tenants: {up*1000:.0f} ms to listening; idle RSS after 3 s: {rss(p.pid):.1f} MiB")
    async with aiohttp.ClientSession() as s:
        lat_b, lat_s, lat_d = [], [], []
        # First use of each credential: one argon2 verification each (memoised after).
        reqs = [("GET", f"{BASE}/api/v1/tenants/t{i}/resources", None, {"Authorization": f"Bearer {keys[i]}"}) for i in range(50)]
        _, first_key, _ = await run_all(s, reqs, 8)
        reqs = [("PROPFIND", f"{BASE}/dav/principals/u{i}/", None, {"Authorization": "Basic " + base64.b64encode(f"u{i}:pw".encode()).decode(), "Depth": "0"}) for i in range(50)]
        _, first_user, _ = await run_all(s, reqs, 8)
        print(f"first use of a key: p50 {pct(first_key,50):.1f} ms p99 {pct(first_key,99):.1f} ms; of a CalDAV password: p50 {pct(first_user,50):.1f} ms p99 {pct(first_user,99):.1f} ms; RSS {rss(p.pid):.1f} MiB")
        for rnd in range(4):
            reqs = []
            for i in range(50):
                h = {"Authorization": f"Bearer {keys[i]}"}
                day = 1 + (rnd * 50 + i) % 28
                reqs.append(("POST", f"{BASE}/api/v1/tenants/t{i}/bookings",
                             {"title": "x", "start": f"2027-03-{day:02d}T{9+rnd:02d}:00:00+01:00", "end": f"2027-03-{day:02d}T{9+rnd:02d}:30:00+01:00", "resources": [f"r{rnd}"]}, h))
            _, lat, bad = await run_all(s, reqs, 8); lat_b += lat
            if bad: print("booking errors", bad[:2])
        for rnd in range(4):
            reqs = [("GET", f"{BASE}/api/v1/tenants/t{i}/slots?start=2027-03-01T00:00:00Z&end=2027-03-08T00:00:00Z&duration=30&resources=r0,r1,r2,r3,r4", None, {"Authorization": f"Bearer {keys[i]}"}) for i in range(50)]
            _, lat, bad = await run_all(s, reqs, 8); lat_s += lat
            if bad: print("slots errors", bad[:2])
        for rnd in range(4):
            reqs = []
            for i in range(50):
                auth = "Basic " + base64.b64encode(f"u{i}:pw".encode()).decode()
                reqs.append(("PROPFIND", f"{BASE}/dav/principals/u{i}/", None, {"Authorization": auth, "Depth": "0"}))
            _, lat, bad = await run_all(s, reqs, 8); lat_d += lat
            if bad: print("dav errors", bad[:2])
        for name, v in [("booking POST", lat_b), ("slots (5 resources, 1 week)", lat_s), ("CalDAV PROPFIND principal", lat_d)]:
            print(f"{name}: n={len(v)} p50 {pct(v,50):.2f} ms p99 {pct(v,99):.2f} ms")
    print(f"RSS after: {rss(p.pid):.1f} MiB")
    p.terminate(); p.wait()

asyncio.run(main())
