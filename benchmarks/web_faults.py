"""The web page's server under load, bad input and kills, on loopback: a real `sdekit serve` of a tiny
random model. Prints concurrent clients served, answers to ~800 bad requests, resident memory around
16-megapixel uploads, and files left by SIGKILL mid-upload.

    nice -n 10 .venv/bin/python benchmarks/web_faults.py [KILLS]
"""
import io, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, threading, time, http.client
from pathlib import Path
from PIL import Image

PY = sys.executable
work = Path(tempfile.mkdtemp(prefix="sdekit-load-"))
tmp = work / "tmp"; tmp.mkdir()
subprocess.run([PY, "-c", f"from sdekit.models.bundle import random_model, save_bundle; m = random_model(shape=(1, 16, 16), sde='vp'); save_bundle({str(work / 'm')!r}, m.net, shape=m.shape, name='tiny')"], check=True)

def start():
    p = subprocess.Popen([PY, "-m", "sdekit.apps.cli", "serve", "--port", "0", "--threads", "1", "--model", str(work / "m")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    line = p.stdout.readline()
    host, port = line.split("http://", 1)[1].split("/", 1)[0].split(":")
    return p, int(port)

def req(port, method, path, body=b"", headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse(); return r.status, r.read()
    finally:
        c.close()

def rss_mb(pid):
    d = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(d["VmRSS"].split()[0]) / 1024, int(d["VmHWM"].split()[0]) / 1024

def png(im):
    b = io.BytesIO(); im.save(b, format="PNG"); return b.getvalue()

canvas = Image.new("RGBA", (384, 384), (0, 0, 0, 255)); canvas.paste((255, 255, 255, 255), (0, 192, 384, 288))
URL = "data:image/png;base64," + __import__("base64").b64encode(png(canvas)).decode()
JSON = {"Content-Type": "application/json"}
OCT = {"Content-Type": "application/octet-stream"}
big = png(Image.linear_gradient("L").resize((4096, 4096)).convert("RGBA"))

# ---- 1. concurrent clients ----
p, port = start()
print("server rss at start (MB):", rss_mb(p.pid))
codes, lock = {}, threading.Lock()
def client(i):
    try:
        if i % 3 == 0: s, _ = req(port, "POST", "/api/upload", png(canvas), OCT)
        elif i % 3 == 1: s, _ = req(port, "POST", "/api/jobs", json.dumps({"kind": "edit", "n": 1, "steps": 2, "sampler": "em", "image": URL}).encode(), JSON)
        else: s, _ = req(port, "GET", "/api/info")
    except Exception as e:
        s = type(e).__name__
    with lock: codes[s] = codes.get(s, 0) + 1
for n in (50, 200):
    codes.clear()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    t0 = time.monotonic(); [t.start() for t in ts]; [t.join() for t in ts]
    print(f"{n} simultaneous clients: {dict(sorted(codes.items(), key=str))} in {time.monotonic() - t0:.1f} s")
# idle connections (slowloris) then a normal client
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(62)]
print("62 idle connections held; a new client gets", req(port, "GET", "/api/info")[0])
idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
print("102 idle connections; a new client gets", req(port, "GET", "/api/info")[0])
t0 = time.monotonic()
while req(port, "GET", "/api/info")[0] != 200: time.sleep(0.2)
print(f"served again {time.monotonic() - t0:.1f} s later (idle connections closed by the server: "
      f"{sum(1 for s in idle if s.recv(1) == b'')} of {len(idle)})")
for s in idle: s.close()

# ---- memory per upload ----
open(f"/proc/{p.pid}/clear_refs", "w").write("5")
before = rss_mb(p.pid)[0]
assert req(port, "POST", "/api/upload", big, OCT)[0] == 200
after, peak = rss_mb(p.pid)
print(f"one 4096x4096 RGBA upload ({len(big)/1e6:.2f} MB file): rss {before:.0f} -> peak {peak:.0f} -> after {after:.0f} MB")
open(f"/proc/{p.pid}/clear_refs", "w").write("5")
ts = [threading.Thread(target=req, args=(port, "POST", "/api/upload", big, OCT)) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
after, peak = rss_mb(p.pid)
print(f"8 such uploads at once: peak {peak:.0f} MB, after {after:.0f} MB")

# ---- 2. bad requests ----
rng = random.Random(0)
good = {"kind": "edit", "n": 1, "steps": 2, "t0": 0.3, "sampler": "em", "image": URL, "seed": 1}
values = [None, True, -1, 0, 1e999, -1e999, 10**30, 2**63, "", "x" * 10000, [], {}, [[[]]], "NaN", 0.5, "data:image/png;base64,@@", "data:,", URL[:200]]
bad_codes = {}
N = 0
def record(s):
    global N
    N += 1; bad_codes[s] = bad_codes.get(s, 0) + 1
for _ in range(600):
    body = dict(good); k = rng.choice(list(good) + ["mask", "label", "repeats", "kind"])
    body[k] = rng.choice(values)
    data = json.dumps(body).encode()
    if rng.random() < 0.3:                                  # break the bytes too
        i = rng.randrange(len(data)); data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    if rng.random() < 0.1: data = data[: rng.randrange(len(data))]
    s, out = req(port, "POST", "/api/jobs", data, JSON)
    if s >= 500 and s != 503: print("5xx:", s, out[:200], data[:300])
    record(s if s != 202 else "202 (valid after all)")
for data in [b"[" * 100000, b"{\"a\":" * 50000, b"\x00" * 1000, os.urandom(5000), b"\"" * 3]:
    record(req(port, "POST", "/api/jobs", data, JSON)[0])
for _ in range(100):
    data = os.urandom(rng.randrange(1, 3000))
    record(req(port, "POST", "/api/upload", data, OCT)[0])
    f = bytearray(png(canvas)); i = rng.randrange(len(f)); f[i] ^= 0xFF
    record(req(port, "POST", "/api/upload", bytes(f), {"Content-Type": "image/png"})[0])
for h in [{"Origin": "http://evil.example", **JSON}, {"Content-Type": "text/plain"}, {"Host": "evil.example", **JSON},
          {"Sec-Fetch-Site": "cross-site", **JSON}, {"Content-Type": "multipart/form-data; boundary=x"}, {"Origin": "null", **JSON}]:
    record(req(port, "POST", "/api/jobs", json.dumps(good).encode(), h)[0])
for path in ["/api/jobs/../../etc/passwd", "/static/../server.py", "/api/jobs/x/../../a.png", "/" + "a" * 5000, "/api/jobs/%00", "/static/%2e%2e/%2e%2e/pyproject.toml"]:
    record(req(port, "GET", path)[0])
for raw in [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9.9\r\n\r\n", b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"]:
    s = socket.create_connection(("127.0.0.1", port), timeout=30); s.sendall(raw)
    out = b""
    try:
        while chunk := s.recv(4096): out += chunk
    except OSError: pass
    s.close()
    record(int(out[9:12]) if out.startswith(b"HTTP/1.1 ") else "closed")
print(f"{N} bad requests: answers {dict(sorted(bad_codes.items(), key=str))}")
print("still serving:", req(port, "GET", "/api/info")[0], "rss", rss_mb(p.pid))
p.send_signal(signal.SIGTERM); p.wait(20)
print("SIGTERM: exit code", p.returncode, "files left in TMPDIR:", sorted(x.name for x in tmp.iterdir() if x.name.startswith("sdekit")))

# ---- 4. kills ----
survived = 0
for k in range(int(sys.argv[1]) if len(sys.argv) > 1 else 10):
    p, port = start()
    assert req(port, "GET", "/api/info")[0] == 200
    def safe():
        try: req(port, "POST", "/api/upload", big, OCT, timeout=30)
        except Exception: pass
    ts = [threading.Thread(target=safe) for _ in range(3)]
    [t.start() for t in ts]
    time.sleep(rng.uniform(0.05, 0.8))                      # somewhere in the decodes
    p.kill(); p.wait()
    [t.join() for t in ts]
    left = sorted(x.name for x in tmp.iterdir() if x.name.startswith("sdekit"))
    survived += not left
    if left: print("kill", k, "left", left)
p, port = start()
print(f"kills mid-upload: {survived} of {k + 1} left no file; restarted server answers", req(port, "GET", "/api/info")[0])
p.kill(); p.wait()
shutil.rmtree(work, ignore_errors=True)
