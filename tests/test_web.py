"""The web page's server: image conversion, validation, the job queue and the HTTP API."""
import base64
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

import sdekit
from sdekit.models.bundle import random_model
from sdekit.core.errors import UserError
from sdekit.data.images import to_pil
from sdekit.apps.web import server as web


@pytest.fixture(scope="module")
def model():
    return random_model(shape=(1, 16, 16), sde="vp")


def png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(im) -> str:
    return "data:image/png;base64," + base64.b64encode(png(im)).decode()


def stroke_canvas(size=384, colour=(255, 255, 255, 255)):
    """A black canvas with a white horizontal bar over rows 8..11 of a 16x16 model grid."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    z = size // 16
    im.paste(Image.new("RGBA", (size, 4 * z), colour), (0, 8 * z))
    return im


class FakeEdit:
    """Stands in for sdekit.sdedit / inpaint: records its arguments and takes ``steps`` solver steps of one
    evaluation each, calling the step hook after each as the solvers do."""

    def __init__(self, gate: threading.Event | None = None, fail: Exception | None = None):
        self.calls, self.gate, self.fail = [], gate, fail

    def __call__(self, sde, score_fn, x, *args, steps=10, generator=None, **kw):
        self.calls.append({"x": x.clone(), "args": args, "steps": steps, **kw})
        if self.gate is not None:
            self.gate.wait(20)
        if self.fail is not None:
            raise self.fail
        from sdekit.solvers.loop import StepState
        t = torch.full((x.shape[0],), 0.5)
        for i in range(steps):
            score_fn(x, t)
            if kw.get("callback") is not None:
                kw["callback"](StepState(i, steps, 0.5, 1.0, x, None, i + 1, 0.6))
        return x.flip(-1)                     # a visible, checkable change


# ---- images ---------------------------------------------------------------------------------------

def test_upload_converts_to_the_model_resolution():
    u = web.load_upload(png(stroke_canvas()), (1, 16, 16)).pixels
    assert u.shape == (1, 1, 16, 16)
    assert u[0, 0, 8:12].min() > 0.9 and u[0, 0, :6].max() < 0.05 and u[0, 0, 14:].max() < 0.05
    im = Image.new("RGBA", (64, 32), (255, 255, 255, 0))          # wide: cropped to the centre 32x32
    im.paste(Image.new("RGBA", (32, 32), (255, 0, 0, 255)), (16, 0))
    grey = web.load_upload(png(im), (1, 8, 8)).pixels
    assert torch.allclose(grey[..., 1:-1], torch.full_like(grey[..., 1:-1], 0.299), atol=2 / 255)   # luma of red
    rgb = web.load_upload(png(im), (3, 8, 8)).pixels
    assert torch.allclose(rgb[0, :, 4, 4], torch.tensor([1.0, 0, 0]), atol=2 / 255)
    from sdekit.data.images import load_image                        # exactly the library's rule
    assert torch.equal(rgb, load_image(png(im), (3, 8, 8)).pixels)


def test_canvas_at_an_exact_zoom_comes_back_unchanged():
    u = torch.rand(1, 3, 16, 16)
    shown = to_pil(u[0]).resize((16 * 24, 16 * 24), Image.NEAREST)           # how the page draws it
    back = web.load_canvas(png(shown), (3, 16, 16)).pixels
    assert torch.allclose(back, u, atol=0.5 / 255 + 1e-6)
    half = Image.new("L", (48, 48), 0)                                       # zoom 3: block means
    half.paste(Image.new("L", (1, 48), 255), (0, 0))
    assert torch.allclose(web.load_canvas(png(half), (1, 16, 16)).pixels[0, 0, :, 0], torch.full((16,), 85 / 255), atol=1e-6)


def test_mask_layer_painted_is_regenerated_and_the_rest_kept():
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    im.paste(Image.new("RGBA", (40, 160), (255, 0, 0, 255)), (0, 0))       # columns 0..3 of 16
    m = web.keep_mask(png(im), (1, 16, 16))                                 # the library's masks: 1 = keep
    assert m.shape == (1, 1, 16, 16)
    assert not m[..., :4].any() and m[..., 4:].all()
    assert not web.keep_mask(png(Image.new("RGB", (20, 20), "red")), (3, 16, 16)).any()


def test_bad_files_are_refused_with_a_message_naming_no_server_path():
    for data, match in [(b"this is not an image at all", "image: not an image"), (b"", "empty")]:
        with pytest.raises(UserError, match=match):
            web.load_upload(data, (1, 16, 16))
    with pytest.raises(UserError, match="limit"):
        web.load_upload(png(Image.new("L", (8, 8))), (1, 16, 16), web.Limits(upload_bytes=10))
    with pytest.raises(UserError, match="too large"):                        # a small file, a huge image
        web.load_upload(png(Image.new("1", (3000, 3000))), (1, 16, 16), web.Limits(pixels=1000 * 1000))
    truncated = png(Image.effect_noise((64, 64), 50))[:200]
    with pytest.raises(UserError, match="truncated") as e:
        web.load_upload(truncated, (1, 16, 16))
    assert "/" not in str(e.value)


def test_png_round_trip():
    u = torch.rand(3, 5, 7)
    back = web.load_upload(web.png_bytes(u), (3, 5, 7)).pixels[0]
    assert torch.allclose(back, u, atol=0.5 / 255 + 1e-6)


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, match", [
    ({"kind": "paint"}, "kind must be one of"),
    ({"kind": "sample", "steps": 0}, "steps must lie in"),
    ({"kind": "sample", "steps": 10 ** 9}, "steps must lie in"),
    ({"kind": "sample", "steps": 2.5}, "whole number"),
    ({"kind": "sample", "n": "many"}, "whole number"),
    ({"kind": "sample", "n": 1000}, "n must lie in"),
    ({"kind": "sample", "sampler": "magic"}, "sampler must be one of"),
    ({"kind": "sample", "label": 3}, "label must lie in"),
    ({"kind": "sample", "seed": -1}, "seed must lie in"),
    ({"kind": "edit", "t0": 0, "image": "x"}, "t0 must lie in"),
    ({"kind": "edit", "t0": 1.5, "image": "x"}, "t0 must lie in"),
    ({"kind": "edit", "t0": "nan", "image": "x"}, "t0 must lie in"),
    ({"kind": "edit", "repeats": 99, "image": "x"}, "repeats must lie in"),
    ({"kind": "edit"}, "paint something"),
    ({"kind": "edit", "image": "not a data url"}, "data URL"),
    ({"kind": "edit", "image": "data:image/png;base64,@@@"}, "base64"),
    ({"kind": "edit", "image": "data:image/png;base64," + base64.b64encode(b"GIF89a junk").decode()}, "image: "),
])
def test_parse_task_rejects(model, body, match):
    with pytest.raises(UserError, match=match):
        web.parse_task(model, body)


def test_parse_task_inpaint_needs_a_mask(model):
    body = {"kind": "inpaint", "image": data_url(stroke_canvas())}
    with pytest.raises(UserError, match="mask"):
        web.parse_task(model, body)
    empty = data_url(Image.new("RGBA", (384, 384), (0, 0, 0, 0)))
    with pytest.raises(UserError, match="mask"):
        web.parse_task(model, {**body, "mask": empty})


def test_parse_task_edit(model):
    mask = Image.new("RGBA", (384, 384), (0, 0, 0, 0))
    mask.paste(Image.new("RGBA", (192, 384), (255, 0, 0, 255)), (0, 0))
    t = web.parse_task(model, {"kind": "edit", "t0": "0.4", "steps": 50, "n": 3, "seed": 7, "repeats": 2,
                               "sampler": "EM", "image": data_url(stroke_canvas()), "mask": data_url(mask)})
    assert (t.kind, t.t0_frac, t.steps, t.n, t.seed, t.repeats, t.sampler) == ("edit", 0.4, 50, 3, 7, 2, "em")
    assert t.image.shape == (1, 1, 16, 16) and t.image[0, 0, 8:12].min() > 0.9 and t.image[0, 0, :6].max() < 0.05
    assert not t.mask[..., :8].any() and t.mask[..., 8:].all()            # painted half: regenerated
    assert t.expected_nfe() == 50 * 2


# ---- the work, without HTTP -------------------------------------------------------------------------

def test_run_task_edit_passes_model_space_guide_t0_and_mask(model, monkeypatch):
    fake = FakeEdit()
    monkeypatch.setitem(vars(sdekit), "sdedit", fake)
    keep = torch.ones(1, 1, 16, 16)
    keep[..., 4:9, :] = 0
    task = web.Task(kind="edit", n=3, steps=7, sampler="em", seed=1, t0_frac=0.25, repeats=2,
                    image=torch.rand(1, 1, 16, 16), mask=keep)
    seen = []
    out = web.run_task(model, task, seen.append)
    call = fake.calls[0]
    assert torch.allclose(call["x"], model.from_unit(task.image).expand(3, 1, 16, 16))
    assert call["t0"] == 0.25 and call["repeats"] == 2 and call["sampler"] == "em" and call["steps"] == 7
    assert call["mask"].shape == (3, 1, 16, 16) and torch.equal(call["mask"][2], keep[0])   # 1 = keep
    assert seen == list(range(1, 8))                       # progress after every solver step
    assert torch.allclose(out["results"], task.image.flip(-1).expand(3, 1, 16, 16), atol=1e-6)
    assert out["guide"] is task.image


def test_run_task_inpaint_keeps_the_pixels_the_mask_keeps(model, monkeypatch):
    fake = FakeEdit()
    monkeypatch.setitem(vars(sdekit), "inpaint", fake)
    keep = torch.ones(1, 1, 16, 16)
    keep[..., :5] = 0
    web.run_task(model, web.Task(kind="inpaint", n=2, steps=3, sampler="em", image=torch.rand(1, 1, 16, 16), mask=keep))
    known = fake.calls[0]["args"][0]
    assert fake.calls[0]["sampler"] == "em"
    assert known.shape == (2, 1, 16, 16) and torch.equal(known[0], keep[0])


def test_run_task_sample_is_seeded(model):
    t = web.Task(kind="sample", n=2, steps=3, sampler="em", seed=5)
    a, b = web.run_task(model, t)["results"], web.run_task(model, t)["results"]
    c = web.run_task(model, web.Task(kind="sample", n=2, steps=3, sampler="em", seed=6))["results"]
    assert a.shape == (2, 1, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- HTTP ------------------------------------------------------------------------------------------

@pytest.fixture
def served(model):
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(upload_bytes=200_000, waiting=2))
    web.start_in_thread(srv)
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    web.stop(srv)


JSON = {"Content-Type": "application/json"}
OCTETS = {"Content-Type": "application/octet-stream"}


def call(url, data=None, method=None, headers=None):
    """(status, headers, body bytes) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post_json(url, obj):
    s, h, b = call(url, json.dumps(obj).encode(), "POST", JSON)
    return s, json.loads(b)


def raw_request(base, method, path, headers, body=b"", send_body=False):
    """(status, body) of a request whose headers are sent first; the body only when ``send_body``."""
    import http.client
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
    for k, v in {**headers, "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders(body if send_body else None)
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def wait_done(base, job_id, timeout=60):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        s, _, b = call(f"{base}/api/jobs/{job_id}")
        st = json.loads(b)
        if st["status"] in ("done", "error", "cancelled"):
            return st
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_page_and_static_files_are_local(served):
    _, base = served
    s, h, b = call(base + "/")
    assert s == 200 and b"<canvas id=\"paint\"" in b and "default-src 'self'" in h["Content-Security-Policy"]
    for f in ("app.js", "style.css"):
        s, h, b = call(f"{base}/static/{f}")
        assert s == 200 and b
        assert b"http://" not in b and b"https://" not in b            # nothing fetched from elsewhere
    assert b"http" not in call(base + "/")[2].replace(b"http-equiv", b"")
    assert call(base + "/static/../server.py")[0] == 404
    assert call(base + "/static/%2e%2e/server.py")[0] == 404
    assert call(base + "/nowhere")[0] == 404


def test_info(served, model):
    _, base = served
    info = json.loads(call(base + "/api/info")[2])
    assert info["shape"] == [1, 16, 16] and info["limits"]["upload_bytes"] == 200_000
    firsts = {k: v[0] for k, v in info["samplers"].items()}                # the library's defaults first
    assert firsts == {"edit": "reverse_diffusion", "inpaint": "pc", "sample": "abm"}
    finishing = {s.name for s in sdekit.solvers.registry.REGISTRY.values() if s.finishes}
    assert all(set(v) == finishing for v in info["samplers"].values())      # no sampler that returns noise
    assert {"heun", "langevin", "ald"} <= finishing
    from sdekit.tasks.sdedit import default_t0, sdedit_steps
    d = info["defaults"]["edit"]
    assert d["t0"] == default_t0(model) and d["steps"] == sdedit_steps("reverse_diffusion", d["t0"])


def test_info_tells_the_page_how_the_model_looks():
    from sdekit.tasks.sdedit import default_t0
    from sdekit.apps.web.app import App
    for shape, look, background in [((1, 16, 16), "light-on-dark", "#000000"), ((3, 8, 8), "natural", "#808080")]:
        app = App(random_model(shape=shape, sde="vp"))
        try:
            info = app.info()
        finally:
            app.queue.close()
        assert info["shape"] == list(shape) and info["polarity"] == look and info["background"] == background
        assert info["defaults"]["edit"]["t0"] == default_t0(app.model)


def test_models_of_other_shapes_are_refused_before_serving():
    from sdekit.apps.web.app import App
    for shape in [(2,), (4, 8, 8)]:
        net = torch.nn.Identity()
        with pytest.raises(UserError, match=r"the page paints grey or RGB images; \w+ takes samples of shape"):
            App(sdekit.wrap(net, prediction="x0", sde=sdekit.VPSDE(), shape=shape))


def test_an_rgb_canvas_shown_1_to_1_reaches_the_model_unchanged():
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (3, 32, 32), generator=g).float() / 255
    back = web.load_canvas(png(to_pil(u)), (3, 32, 32)).pixels[0]              # a 32x32 model, no enlargement
    assert torch.equal(back, u)
    big = web.load_canvas(png(to_pil(u).resize((96, 96), Image.NEAREST)), (3, 32, 32)).pixels[0]   # 3x enlarged
    torch.testing.assert_close(big, u, atol=1e-6, rtol=0)


def test_upload_validates_and_resizes(served):
    _, base = served
    s, _, b = call(base + "/api/upload", png(stroke_canvas(160)), "POST", OCTETS)
    assert s == 200
    out = json.loads(b)
    im = Image.open(io.BytesIO(base64.b64decode(out["image"].split(",", 1)[1])))
    assert im.size == (16, 16) and (out["width"], out["height"]) == (160, 160)
    s, _, b = call(base + "/api/upload", b"%PDF-1.4 not an image", "POST", {"Content-Type": "image/png"})
    assert s == 400 and json.loads(b)["error"].startswith("the file: not an image")
    s, b = raw_request(base, "POST", "/api/upload", OCTETS, b"\0" * 300_000)    # answered before it is read
    assert s == 413 and len(b.strip().splitlines()) == 1
    assert call(base + "/api/info")[0] == 200                     # still serving


def test_bad_job_requests_get_messages(served):
    _, base = served
    s, _, b = call(base + "/api/jobs", b"{not json", "POST", JSON)
    assert s == 400 and "JSON" in json.loads(b)["error"]
    s, body = post_json(base + "/api/jobs", {"kind": "edit", "t0": 3, "image": "x"})
    assert s == 400 and "t0" in body["error"]
    assert call(base + "/api/jobs/nope")[0] == 404
    assert call(base + "/api/jobs/nope/result-0.png")[0] == 404
    assert call(base + "/api/elsewhere", b"", "POST", JSON)[0] == 404
    assert call(base + "/api/info", b"", "POST", JSON)[0] == 405


def test_sample_job_end_to_end(served):
    _, base = served
    s, job = post_json(base + "/api/jobs", {"kind": "sample", "n": 3, "steps": 4, "sampler": "em", "seed": 3})
    assert s == 202 and job["status"] in ("queued", "running", "done")
    st = wait_done(base, job["id"])
    assert st["status"] == "done" and st["progress"] == 1 and st["nfe"] == 4 and len(st["results"]) == 3
    s, h, b = call(base + st["results"][0])
    assert s == 200 and h["Content-Type"] == "image/png" and Image.open(io.BytesIO(b)).size == (16, 16)
    grid = Image.open(io.BytesIO(call(base + st["images"]["grid"])[2]))
    assert grid.size == (2 * 17 + 1, 2 * 17 + 1)


def test_edit_job_end_to_end(served, monkeypatch):
    _, base = served
    monkeypatch.setitem(vars(sdekit), "sdedit", FakeEdit())
    s, job = post_json(base + "/api/jobs", {"kind": "edit", "n": 2, "steps": 10, "t0": 0.5, "seed": 1,
                                            "image": data_url(stroke_canvas())})
    st = wait_done(base, job["id"])
    assert st["status"] == "done" and len(st["results"]) == 2 and "guide" in st["images"]
    guide = Image.open(io.BytesIO(call(base + st["images"]["guide"])[2]))
    assert guide.size == (16, 16) and guide.getpixel((0, 9)) == 255 and guide.getpixel((0, 3)) == 0


def test_queue_positions_busy_cancel_and_failures(served, monkeypatch):
    srv, base = served
    gate = threading.Event()
    monkeypatch.setitem(vars(sdekit), "sdedit", FakeEdit(gate=gate))
    req = {"kind": "edit", "n": 1, "steps": 3, "image": data_url(stroke_canvas())}
    first = post_json(base + "/api/jobs", req)[1]
    t = time.monotonic()
    while json.loads(call(f"{base}/api/jobs/{first['id']}")[2])["status"] != "running":
        assert time.monotonic() - t < 20
        time.sleep(0.02)
    second, third = post_json(base + "/api/jobs", req)[1], post_json(base + "/api/jobs", req)[1]
    assert (second["position"], third["position"]) == (1, 2)
    s, body = post_json(base + "/api/jobs", req)                    # waiting list (2) is full
    assert s == 503 and "busy" in body["error"]
    s, _, b = call(f"{base}/api/jobs/{second['id']}/cancel", b"{}", "POST", JSON)
    assert s == 200 and json.loads(b)["status"] == "cancelled"
    assert json.loads(call(f"{base}/api/jobs/{third['id']}")[2])["position"] == 1
    gate.set()
    assert wait_done(base, first["id"])["status"] == "done"
    assert wait_done(base, third["id"])["status"] == "done"

    monkeypatch.setitem(vars(sdekit), "sdedit", FakeEdit(fail=RuntimeError("boom")))
    st = wait_done(base, post_json(base + "/api/jobs", req)[1]["id"])
    assert st["status"] == "error" and "boom" in st["message"]
    monkeypatch.setitem(vars(sdekit), "sdedit", FakeEdit(fail=UserError("t0 too small for 3 steps")))
    st = wait_done(base, post_json(base + "/api/jobs", req)[1]["id"])
    assert st["status"] == "error" and st["message"] == "t0 too small for 3 steps"
    assert call(base + "/api/info")[0] == 200


def test_cancel_a_running_job(served, monkeypatch):
    _, base = served
    started = threading.Event()

    def slow(sde, score_fn, x, *a, steps=10, callback=None, **kw):
        from sdekit.solvers.loop import StepState
        started.set()
        t = torch.full((x.shape[0],), 0.5)
        for i in range(10_000):
            score_fn(x, t)
            callback(StepState(i, 10_000, 0.5, 1.0, x, None, i + 1, 0.6))
            time.sleep(0.001)
        return x
    monkeypatch.setitem(vars(sdekit), "sdedit", slow)
    job = post_json(base + "/api/jobs", {"kind": "edit", "n": 1, "steps": 5, "image": data_url(stroke_canvas())})[1]
    assert started.wait(20)
    call(f"{base}/api/jobs/{job['id']}/cancel", b"", "POST", JSON)
    assert wait_done(base, job["id"])["status"] == "cancelled"


def test_serve_port_in_use_exits_2(capsys):
    from sdekit.apps.cli import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use" in err


def test_serve_command_serves_a_bundle(model, tmp_path):
    import subprocess
    import sys
    from sdekit.models.bundle import save_bundle
    save_bundle(tmp_path / "m", model.net, shape=model.shape, name="tiny")
    proc = subprocess.Popen([sys.executable, "-m", "sdekit.apps.cli", "serve", "--port", "0", "--threads", "1", "--model", str(tmp_path / "m")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "tiny" in line and "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split("http://", 1)[1].split("/", 1)[0]
        info = json.loads(call(f"http://{url}/api/info")[2])
        assert info["name"] == "tiny" and info["shape"] == [1, 16, 16]
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_rejects_a_bad_port(capsys):
    from sdekit.apps.cli import main
    assert main(["serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    assert main(["serve", "--host", "10.255.255.1", "--port", "0"]) == 2          # not this machine's
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot listen on 10.255.255.1" in err
    assert main(["serve", "--port", "0", "--allow-host", "evil.example/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allow-host" in err


def test_many_clients_at_once_get_a_job_or_a_busy_answer(served):
    _, base = served
    answers = []

    def client():
        answers.append(post_json(base + "/api/jobs", {"kind": "sample", "n": 1, "steps": 2, "sampler": "em"}))
    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(s for s, _ in answers)
    assert len(codes) == 12 and set(codes) <= {202, 503} and 202 in codes
    assert all("busy" in b["error"] for s, b in answers if s == 503)
    for s, b in answers:
        if s == 202:
            assert wait_done(base, b["id"])["status"] == "done"


# ---- who may use the server ---------------------------------------------------------------------------

SAMPLE_JOB = json.dumps({"kind": "sample", "n": 1, "steps": 1, "sampler": "em"}).encode()


def test_other_sites_cannot_drive_the_server(served):
    srv, base = served
    evil = {"Origin": "http://evil.example"}
    for path, body, ctype in [("/api/jobs", SAMPLE_JOB, "text/plain"),            # a form: no CORS preflight
                              ("/api/jobs", SAMPLE_JOB, "application/json"),
                              ("/api/upload", png(stroke_canvas(32)), "text/plain"),
                              ("/api/upload", png(stroke_canvas(32)), "application/octet-stream")]:
        s, _, b = call(base + path, body, "POST", {**evil, "Content-Type": ctype})
        assert s == 403 and "refused" in json.loads(b)["error"], (path, ctype, s)
    assert call(base + "/api/info", headers=evil)[0] == 403
    assert call(base + "/api/jobs", SAMPLE_JOB, "POST", {**JSON, "Origin": "null"})[0] == 403
    assert call(base + "/api/jobs", SAMPLE_JOB, "POST", {**JSON, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert call(base + "/api/jobs", SAMPLE_JOB, "POST", {**JSON, "Sec-Fetch-Site": "same-site"})[0] == 403
    assert not srv.app.queue.jobs                                                  # nothing was queued
    assert call(base + "/api/jobs", SAMPLE_JOB, "POST", {**JSON, "Origin": base, "Sec-Fetch-Site": "same-origin"})[0] == 202
    assert call(base + "/", headers={"Sec-Fetch-Site": "cross-site"})[0] == 200   # a link to the page is fine


def test_the_json_api_takes_json_and_uploads_take_files(served):
    _, base = served
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        s, _, b = call(base + "/api/jobs", SAMPLE_JOB, "POST", {"Content-Type": ctype})
        assert s == 415 and "application/json" in json.loads(b)["error"]
        s, _, b = call(base + "/api/upload", png(stroke_canvas(32)), "POST", {"Content-Type": ctype})
        assert s == 415 and "octet-stream" in json.loads(b)["error"]
    assert raw_request(base, "POST", "/api/jobs", {}, SAMPLE_JOB, send_body=True)[0] == 415   # no type at all
    assert call(base + "/api/jobs/abc/cancel", b"{}", "POST", {"Content-Type": "text/plain"})[0] == 415
    assert call(base + "/api/jobs", SAMPLE_JOB, "POST", {"Content-Type": "application/json; charset=utf-8"})[0] == 202
    assert call(base + "/api/upload", png(stroke_canvas(32)), "POST", {"Content-Type": "image/png"})[0] == 200


def test_the_host_header_must_name_this_server(served, model):
    _, base = served
    port = base.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}", "",
                 f"evil@127.0.0.1:{port}", f"10.1.2.3:{port}", "localhost.attacker.example"):
        s, b = raw_request(base, "GET", "/api/info", {"Host": host})
        assert s == 400 and "Host" in json.loads(b)["error"], host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "127.0.0.2"):
        assert raw_request(base, "GET", "/api/info", {"Host": host})[0] == 200, host
    srv = web.make_server(model, "127.0.0.1", 0, allow_hosts=["sdekit.lan"])
    web.start_in_thread(srv)
    try:
        other = f"http://127.0.0.1:{srv.server_address[1]}"
        assert raw_request(other, "GET", "/api/info", {"Host": "sdekit.lan:80"})[0] == 200
        assert raw_request(other, "GET", "/api/info", {"Host": "other.lan"})[0] == 400
    finally:
        web.stop(srv)


def test_host_names_on_every_interface():
    from sdekit.apps.web.app import host_allowed, host_name
    assert host_name("[::1]:7860") == "::1" and host_name("LocalHost.:80") == "localhost"
    assert host_name("a b") is None and host_name("x@y") is None and host_name("") is None
    assert host_allowed("192.168.1.5", "0.0.0.0") and host_allowed("fe80::1", "::")
    assert not host_allowed("192.168.1.5", "127.0.0.1") and host_allowed("192.168.1.5", "192.168.1.5")
    assert not host_allowed("my-pc.lan", "0.0.0.0") and host_allowed("my-pc.lan", "0.0.0.0", ["My-PC.lan"])


def test_no_answer_may_be_framed(served):
    _, base = served
    answers = [call(base + "/"), call(base + "/static/app.js"), call(base + "/api/info"), call(base + "/nowhere"),
               call(base + "/api/info", headers={"Origin": "http://evil.example"})]
    for s, h, _ in answers:
        assert h["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in h["Content-Security-Policy"], s
        assert h["X-Content-Type-Options"] == "nosniff"


# ---- bounded work ------------------------------------------------------------------------------------

def test_bodies_are_bounded(served):
    _, base = served
    for path, headers in (("/api/upload", OCTETS), ("/api/jobs", JSON)):
        assert raw_request(base, "POST", path, headers, b"x" * 200_001)[0] == 413
    assert raw_request(base, "POST", "/api/jobs/abc/cancel", JSON, b" " * 2000)[0] == 413
    import http.client                                       # no Content-Length: counted as it arrives
    conn = http.client.HTTPConnection(*base.split("//")[1].split(":"), timeout=30)
    conn.request("POST", "/api/jobs", body=iter([b" " * 50_000] * 5), headers=JSON, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "limit of 0.2 MB" in json.loads(r.read())["error"]
    conn.close()


def test_image_decodes_run_at_most_limits_decodes_at_once(model, monkeypatch):
    from sdekit.apps.web import app as web_app
    lock, release = threading.Lock(), threading.Semaphore(0)
    running, peak = [0], [0]

    def decode(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.acquire(timeout=30)
        with lock:
            running[0] -= 1
        return web.load_upload(*args, **kwargs)
    monkeypatch.setattr(web_app, "load_upload", decode)
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(decodes=2))
    web.start_in_thread(srv)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    codes = []
    clients = [threading.Thread(target=lambda: codes.append(call(base + "/api/upload", png(stroke_canvas(32)), "POST", OCTETS)[0]))
               for _ in range(6)]
    try:
        for c in clients:
            c.start()
        t = time.monotonic()
        while running[0] < 2 and time.monotonic() - t < 30:
            time.sleep(0.01)
        time.sleep(0.3)                                     # room for a third decode to start, if one could
        assert running[0] == 2
    finally:
        for _ in clients:
            release.release()
        for c in clients:
            c.join(30)
        web.stop(srv)
    assert peak[0] == 2 and codes == [200] * 6


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident size from /proc")
def test_the_memory_of_uploads_is_returned(model):
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(upload_bytes=4_000_000, pixels=4096 * 4096, zoom=256))
    web.start_in_thread(srv)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    data = png(Image.linear_gradient("L").resize((4096, 4096)).convert("RGBA"))      # 16.8 M pixels, 0.1 MB
    send = lambda: call(base + "/api/upload", data, "POST", OCTETS)[0]
    try:
        assert send() == 200                                                         # imports, caches
        before = _rss_mb()
        codes = []
        clients = [threading.Thread(target=lambda: codes.append(send())) for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(120)
        after = _rss_mb()
    finally:
        web.stop(srv)
    assert codes == [200] * 4
    assert after - before < 50, (before, after)          # each decode took ~150 MB; it is given back


# ---- bad requests ----------------------------------------------------------------------------------------

BAD_JOBS = [
    (b"[" * 50_000 + b"]" * 50_000, "nests too deeply"),
    (b"{" * 50_000, "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b'{"kind": "\xff"}', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"edit"', "JSON object"),
    (b'{"kind": "sample", "n": ' + b"9" * 4000 + b"}", "n must be a whole number"),
    (b'{"kind": "sample", "n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"kind": "sample", "n": 1e999}', "n must be a whole number"),
    (b'{"kind": "sample", "steps": NaN}', "steps must be a whole number"),
    (b'{"kind": "sample", "seed": -Infinity}', "seed must be a whole number"),
    (b'{"kind": ["sample"]}', "kind must be one of"),
    (b'{"kind": {"a": 1}}', "kind must be one of"),
    (b'{"kind": "sample", "sampler": "' + b"x\\n" * 5000 + b'"}', "sampler must be one of"),
    (b'{"kind": "edit", "t0": {"a": 1}, "image": "x"}', "t0 must lie in"),
    (b'{"kind": "edit", "t0": 1e400, "image": "x"}', "t0 must lie in"),
    (b'{"kind": "edit", "image": 12}', "data URL"),
    (b'{"kind": "edit", "image": "data:image/png;base64,' + base64.b64encode(b"\0" * 50_000) + b'"}', "image: "),
    (b'{"kind": "edit", "image": "data:image/png;base64,' + base64.b64encode(png(Image.new("L", (5000, 5000)))) + b'"}', "too large"),
]


def test_every_bad_request_gets_a_4xx_with_one_line(served):
    _, base = served
    for body, match in BAD_JOBS:
        s, _, b = call(base + "/api/jobs", body, "POST", JSON)
        error = json.loads(b)["error"]
        assert s == 400 and match in error and "\n" not in error and len(error) < 300, (body[:40], s, error)
    for data in (b"", b"GIF89a", png(Image.effect_noise((64, 64), 50))[:200], b"%!PS-Adobe-3.0 EPSF-3.0\n"):
        s, _, b = call(base + "/api/upload", data, "POST", OCTETS)
        assert s == 400 and "\n" not in json.loads(b)["error"]
    assert call(base + "/api/jobs/abc/cancel", b"[" * 500, "POST", JSON)[0] == 400
    assert call(base + "/api/info")[0] == 200                                      # still serving


def test_corrupt_images_are_client_errors(model):
    import random
    rng = random.Random(0)
    files = [png(stroke_canvas())]
    for fmt in ("JPEG", "GIF", "WEBP", "TIFF"):
        buf = io.BytesIO()
        Image.effect_noise((96, 96), 60).convert("RGB").save(buf, format=fmt)
        files.append(buf.getvalue())
    for data in files:
        for k in range(40):
            bad = bytearray(data[: rng.randrange(8, len(data))] if k % 2 else data)
            for _ in range(k % 2 == 0 and 3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            url = "data:image/png;base64," + base64.b64encode(bytes(bad)).decode()
            try:
                web.parse_task(model, {"kind": "edit", "image": url})
            except UserError as e:
                assert "\n" not in str(e)


def _read_until_closed(sock) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_idle_and_short_bodied_connections_time_out(model):
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(head_seconds=0.5, body_seconds=0.5))
    web.start_in_thread(srv)
    addr = srv.server_address[:2]
    try:
        head = b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        for sent, answer in [(b"", b""),                                           # connects, says nothing
                             (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""),     # headers never end
                             (head + b"Content-Length: 100\r\n\r\n{\"kind\"", b"HTTP/1.1 408")]:  # body too short
            with socket.create_connection(addr, timeout=30) as s:
                s.sendall(sent)
                assert _read_until_closed(s).startswith(answer), sent      # closed by the server, not by our timeout
    finally:
        web.stop(srv)


def test_connections_beyond_the_limit_are_answered_busy(model):
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(connections=4, head_seconds=30))
    web.start_in_thread(srv)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    idle = [socket.create_connection(srv.server_address[:2], timeout=30) for _ in range(4)]
    try:
        assert call(base + "/api/info")[0] == 503
        for s in idle:
            s.close()
        t = time.monotonic()
        while call(base + "/api/info")[0] != 200:
            assert time.monotonic() - t < 30
            time.sleep(0.05)
    finally:
        web.stop(srv)


# ---- faults ------------------------------------------------------------------------------------------------

def test_an_upload_is_decoded_without_writing_a_file(served, tmp_path, monkeypatch):
    import sdekit.data.images
    import tempfile
    _, base = served
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real, seen = sdekit.data.images.load_image, []

    def load_image(*args, **kwargs):                     # what a kill at this moment would leave behind
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real(*args, **kwargs)
    monkeypatch.setattr(sdekit.data.images, "load_image", load_image)
    assert call(base + "/api/upload", png(stroke_canvas(32)), "POST", OCTETS)[0] == 200
    assert seen == [[]]


def test_upload_folders_left_by_killed_servers_are_removed_on_start(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old, recent, other = (tmp_path / f"sdekit-web-{k}" for k in ("a1", "b2", "c3"))
    for d in (old, recent, other):
        d.mkdir()
        (d / "upload").write_bytes(b"\x89PNG half an upload")
    (other / "notes.txt").write_text("not ours")
    for d in (old, other):
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    web.bind("127.0.0.1", 0).server_close()
    assert not old.exists() and recent.exists() and other.exists()


def test_tasks_and_the_queue_need_no_http():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, sdekit.apps.web.tasks, sdekit.apps.web.jobs; "
                          "print(sorted(m for m in ('starlette', 'uvicorn', 'anyio') if m in sys.modules))"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr[-500:]


# ---- one mask convention -------------------------------------------------------------------------------

def test_a_jobs_mask_png_is_white_where_the_guide_is_kept(served, monkeypatch):
    from sdekit.data.images import load_mask
    _, base = served
    fake = FakeEdit()
    monkeypatch.setitem(vars(sdekit), "sdedit", fake)
    layer = Image.new("RGBA", (384, 384), (0, 0, 0, 0))
    layer.paste(Image.new("RGBA", (96, 384), (255, 59, 48, 255)), (0, 0))   # columns 0..3 painted: regenerate
    s, job = post_json(base + "/api/jobs", {"kind": "edit", "n": 1, "steps": 2, "image": data_url(stroke_canvas()),
                                            "mask": data_url(layer)})
    st = wait_done(base, job["id"])
    mask_png = call(base + st["images"]["mask"])[2]
    m = Image.open(io.BytesIO(mask_png))
    assert m.getpixel((1, 5)) == 0 and m.getpixel((10, 5)) == 255      # black = regenerated, white = kept
    given = fake.calls[0]["mask"]                                       # what sdedit was told to keep
    assert not given[0, 0, :, :4].any() and given[0, 0, :, 4:].all()
    f = io.BytesIO(mask_png)
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".png") as tmp:             # `sdekit edit --mask` reads it the same
        tmp.write(f.getvalue())
        tmp.flush()
        assert torch.equal(load_mask(tmp.name, (16, 16)), given[:1])


def test_upload_drawn_dark_on_light_is_inverted_for_a_light_on_dark_model(served):
    _, base = served
    dark_on_light = Image.eval(stroke_canvas(160).convert("RGB"), lambda v: 255 - v)    # black bar on white
    s, _, b = call(base + "/api/upload", png(dark_on_light), "POST", OCTETS)
    assert s == 200
    out = json.loads(b)
    im = Image.open(io.BytesIO(base64.b64decode(out["image"].split(",", 1)[1]))).convert("L")
    assert out["inverted"] is True and im.getpixel((0, 0)) < 30 and im.getpixel((0, 9)) > 220
    s, _, b = call(base + "/api/upload", png(stroke_canvas(160)), "POST", OCTETS)
    assert json.loads(b)["inverted"] is False


def test_a_finished_job_counts_its_images_in_words(served):
    _, base = served
    for n, words in ((1, "1 image in "), (2, "2 images in ")):
        job = post_json(base + "/api/jobs", {"kind": "sample", "n": n, "steps": 1, "sampler": "em"})[1]
        st = wait_done(base, job["id"])
        assert st["status"] == "done" and st["message"].startswith(words), st["message"]
