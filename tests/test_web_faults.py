"""The page under faults: stopping the server mid-job, clients that fetch late, images whose data end
early or are larger than a model needs, and layers that do not agree."""
import base64
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import pytest
import torch
from PIL import Image

from sdekit.models.bundle import random_model, save_bundle
from sdekit.core.errors import UserError
from sdekit.apps.web import jobs as jobs_module
from sdekit.apps.web import server as web
from sdekit.apps.web.tasks import Task

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model():
    return random_model(shape=(1, 16, 16), sde="vp")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def short_png(w=4096, h=4096, colour=6, rows=1, interlace=0, depth=8) -> bytes:
    """A PNG whose IHDR declares w x h but whose complete zlib stream holds only ``rows`` zero rows."""
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = bytes(rows * (1 + w * bpp * depth // 8))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def call(url, data=None, method="GET", ctype=None):
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype} if ctype else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---- images whose data end early; the pixels the page accepts ---------------------------------------------

def test_a_96_byte_png_declaring_4096x4096_rgba_is_refused(model):
    data = short_png()
    assert len(data) == 96
    with pytest.raises(UserError, match="truncated image: its pixel data end after 16385 of the 67112960 bytes"):
        from sdekit.data.images import load_image
        load_image(data, (1, 16, 16))
    from sdekit.apps.web.uploads import load_upload
    with pytest.raises(UserError, match="4096x4096 image is too large"):            # the page's bound for 16x16
        load_upload(data, (1, 16, 16))
    srv = web.make_server(model, "127.0.0.1", 0, web.Limits(zoom=256))             # 4096 px a side: allowed
    web.start_in_thread(srv)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        status, body = call(base + "/api/upload", data, "POST", "image/png")
        assert status == 400 and "truncated" in json.loads(body)["error"]
        job = {"kind": "edit", "image": data_url(png(Image.new("L", (16, 16)))), "mask": data_url(short_png(64, 64))}
        status, body = call(base + "/api/jobs", json.dumps(job).encode(), "POST", "application/json")
        assert status == 400 and "mask" in json.loads(body)["error"] and "truncated" in json.loads(body)["error"]
    finally:
        web.stop(srv)


@pytest.mark.parametrize("colour,depth,interlace", [(0, 8, 0), (2, 8, 0), (4, 8, 0), (6, 8, 0), (0, 16, 0),
                                                    (0, 8, 1), (6, 8, 1), (0, 1, 0)])
def test_every_kind_of_png_is_checked_for_its_whole_pixel_data(tmp_path, colour, depth, interlace):
    from sdekit.data.images import load_image, png_data_size
    w, h = 21, 13
    need = png_data_size(w, h, depth, colour, interlace == 1)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)

    def made(n):
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(n))) + _chunk(b"IEND", b"")
    assert load_image(made(need), (1, 8, 8)).size == (w, h)                 # the size is exactly right: it decodes
    (tmp_path / "short.png").write_bytes(made(need - 1))
    for source in (made(need - 1), tmp_path / "short.png"):               # bytes and files alike
        with pytest.raises(UserError, match=f"end after {need - 1} of the {need} bytes"):
            load_image(source, (1, 8, 8))


def test_png_data_size_matches_what_a_png_encoder_writes():
    """The byte count of the pixel data against zlib's own output for images Pillow encodes."""
    from sdekit.data.images import png_data_size
    for mode, colour, depth in (("L", 0, 8), ("RGB", 2, 8), ("RGBA", 6, 8), ("LA", 4, 8), ("1", 0, 1), ("I;16", 0, 16)):
        data = png(Image.new(mode, (19, 7)))
        pos, idat = 8, b""
        while pos < len(data):
            n, kind = struct.unpack(">I4s", data[pos:pos + 8])
            idat += data[pos + 8:pos + 8 + n] if kind == b"IDAT" else b""
            pos += 12 + n
        assert len(zlib.decompress(idat)) == png_data_size(19, 7, depth, colour, False), mode


def test_the_page_accepts_no_more_pixels_than_its_model_needs(model):
    from sdekit.apps.web.uploads import load_upload
    limits = web.Limits()
    assert limits.max_pixels(model.shape) == (64 * 16) ** 2
    ok = png(Image.new("L", (1024, 1024)))
    assert load_upload(ok, model.shape, limits).pixels.shape == (1, 1, 16, 16)
    with pytest.raises(UserError, match="1025x1024 image is too large"):
        load_upload(png(Image.new("L", (1025, 1024))), model.shape, limits)
    assert web.Limits(pixels=100 * 100).max_pixels((3, 64, 64)) == 100 * 100   # the absolute bound stays


# ---- layers that must agree ------------------------------------------------------------------------------

def test_a_mask_layer_of_another_size_than_the_image_is_refused_naming_both(model):
    from sdekit.apps.web.tasks import parse_task
    body = {"kind": "inpaint", "image": data_url(png(Image.new("L", (384, 384)))),
            "mask": data_url(png(Image.new("LA", (192, 96), (255, 255))))}
    with pytest.raises(UserError, match="the mask is 192x96 but the image is 384x384"):
        parse_task(model, body)
    body["mask"] = data_url(png(Image.new("LA", (192, 192), (255, 255))))      # same aspect: still not one canvas
    with pytest.raises(UserError, match="the mask is 192x192 but the image is 384x384"):
        parse_task(model, body)


def test_masks_must_agree_with_their_guide_or_image_on_the_command_line(tmp_path, capsys):
    from sdekit.apps.cli import main
    Image.new("L", (64, 64), 40).save(tmp_path / "guide.png")
    Image.new("L", (64, 32), 255).save(tmp_path / "wide.png")
    half = Image.new("L", (32, 32), 255)
    half.paste(0, (8, 8, 24, 24))
    half.save(tmp_path / "small.png")
    for cmd in (["edit", "--guide"], ["inpaint", "--image"]):
        capsys.readouterr()
        out = tmp_path / f"{cmd[0]}.png"
        args = [*cmd, str(tmp_path / "guide.png"), "--model", "digits", "--steps", "2", "--out", str(out)]
        assert main([*args, "--mask", str(tmp_path / "wide.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "wide.png is 64x32 but the" in err and "guide.png is 64x64" in err, err
        assert not out.exists()
        assert main([*args, "--mask", str(tmp_path / "small.png")]) == 0
        printed = capsys.readouterr().out
        assert "small.png 32x32 scaled to the" in printed and "guide.png's 64x64" in printed


def test_check_agree_tolerates_a_pixel_of_rounding_and_nothing_more():
    from sdekit.data.images import check_agree
    assert check_agree((64, 64), (64, 64), "a", "b") is None
    assert check_agree((28, 28), (280, 281), "a", "b") == "a 28x28 scaled to b's 280x281"
    with pytest.raises(UserError, match="a is 28x30 but b is 280x280"):
        check_agree((28, 30), (280, 280), "a", "b")


# ---- retention of finished jobs ----------------------------------------------------------------------------

class InstantModel:
    """What JobQueue needs of a model when run_task is replaced."""


def _instant(monkeypatch, clock):
    def run_task(model, task, on_step=None):
        return {"results": torch.zeros(1, 1, 2, 2), "guide": None, "mask": None}
    monkeypatch.setattr(jobs_module, "run_task", run_task)
    monkeypatch.setattr(jobs_module.time, "monotonic", lambda: clock[0])


def _wait_idle(q):
    deadline = time.time() + 60
    while time.time() < deadline:
        with q.cond:
            if not q.waiting and q.running is None:
                return
        time.sleep(0.005)
    raise AssertionError("the queue did not drain")


def test_every_accepted_job_is_kept_while_the_queue_is_long_and_for_a_while_after(monkeypatch):
    """116 jobs through a queue of 20: each finished job can still be fetched (it was 404 beyond the 32 most
    recent); after ten minutes unread, only the newest 4 x (20 + 1) and those a client still reads stay."""
    clock = [1000.0]
    _instant(monkeypatch, clock)
    q = jobs_module.JobQueue(InstantModel(), web.Limits(waiting=20))
    assert q.keep == 84
    try:
        ids = []
        for k in range(116):
            ids.append(q.submit(Task(kind="sample", n=1, steps=1)).id)
            clock[0] += 0.5
            if k % 15 == 14:
                _wait_idle(q)                                         # the queue drains, then fills again
        _wait_idle(q)
        assert all(q.jobs.get(i) is not None and q.jobs[i].status == "done" for i in ids)   # none forgotten
        clock[0] += q.limits.keep_seconds + 1                         # ten minutes on, nobody looked
        q.get(ids[0])                                                 # but one client is still reading its job
        q.submit(Task(kind="sample", n=1, steps=1))
        _wait_idle(q)
        kept = [i for i in ids if i in q.jobs]
        assert kept == [ids[0]] + ids[-(q.keep - 1):]                 # with the new job: the newest 84
    finally:
        q.close()


def test_the_results_kept_are_bounded_in_bytes(monkeypatch):
    clock = [0.0]
    _instant(monkeypatch, clock)
    q = jobs_module.JobQueue(InstantModel(), web.Limits(waiting=4, keep_bytes=2000))
    try:
        for _ in range(40):
            q.submit(Task(kind="sample", n=1, steps=1))
            _wait_idle(q)
        sizes = [j.size() for j in q.jobs.values()]
        assert sum(sizes) <= 2000 and len(sizes) >= 2000 // max(sizes) - 1
    finally:
        q.close()


def test_closing_the_queue_cancels_waiting_jobs_and_waits_for_the_running_one(monkeypatch):
    started, release = threading.Event(), threading.Event()

    def run_task(model, task, on_step=None):
        started.set()
        while not release.wait(0.01):
            on_step(1)                                                # raises once cancelled
    monkeypatch.setattr(jobs_module, "run_task", run_task)
    q = jobs_module.JobQueue(InstantModel(), web.Limits())
    running = q.submit(Task(kind="sample", n=1, steps=1))
    waiting = q.submit(Task(kind="sample", n=1, steps=1))
    assert started.wait(20)
    assert q.close(20) and not q.worker.is_alive()
    assert (running.status, waiting.status) == ("cancelled", "cancelled")
    with pytest.raises(jobs_module.Busy, match="stopping"):
        q.submit(Task(kind="sample", n=1, steps=1))


def test_a_job_that_does_not_stop_is_waited_for_only_the_grace_period(monkeypatch):
    stuck = threading.Event()

    def run_task(model, task, on_step=None):
        stuck.wait(30)                                                # never calls on_step
    monkeypatch.setattr(jobs_module, "run_task", run_task)
    q = jobs_module.JobQueue(InstantModel(), web.Limits(stop_seconds=0.2))
    q.submit(Task(kind="sample", n=1, steps=1))
    time.sleep(0.1)
    assert q.close() is False
    stuck.set()


# ---- stopping the server while a job runs ------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_server_while_a_job_runs_exits_0(model, tmp_path, sig):
    save_bundle(tmp_path / "m", model.net, shape=model.shape, name="tiny")
    proc = subprocess.Popen([PY, "-m", "sdekit.apps.cli", "serve", "--port", "0", "--threads", "1", "--model",
                             str(tmp_path / "m")], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        base = "http://" + line.split("http://", 1)[1].split("/", 1)[0]
        job = {"kind": "sample", "n": 64, "steps": 2000, "sampler": "em"}            # a minute or more
        status, body = call(base + "/api/jobs", json.dumps(job).encode(), "POST", "application/json")
        job_id = json.loads(body)["id"]
        deadline = time.time() + 120
        while json.loads(call(f"{base}/api/jobs/{job_id}")[1])["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "terminate called" not in err and "Traceback" not in err
