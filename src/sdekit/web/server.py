"""The stroke-painting web page: a small HTTP server from the standard library over the sdekit API.

Three layers, each testable alone:

* ``parse_task(model, body)``: JSON parameters and images (data URLs) -> a validated :class:`Task`;
  every problem is a :class:`UserError` whose message the page shows;
* ``run_task(model, task, on_step)``: the work itself, no HTTP (SDEdit, inpainting or sampling);
* :class:`JobQueue`: one worker thread runs tasks in order; clients poll ``/api/jobs/<id>`` for the
  queue position, the progress (score evaluations done / expected) and finally the PNG results.

The HTTP handler is a thin routing layer over those. Nothing is fetched from elsewhere: the page,
its script and its style are the files in ``static/``, and the Content-Security-Policy forbids any
other origin.
"""
from __future__ import annotations

import base64
import binascii
import collections
import errno
import io
import json
import math
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from ..errors import UserError

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}
CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"

KINDS = ("edit", "inpaint", "sample")


@dataclass
class Limits:
    """What one request may ask for; larger requests get a 400/413 with the limit in the message."""
    upload_bytes: int = 4 * 1024 * 1024      # an uploaded image file, or the JSON body of a job
    pixels: int = 4096 * 4096                # decoded image size (refuses decompression bombs)
    steps: int = 2000
    results: int = 16                        # images per SDEdit / inpainting job
    samples: int = 64                        # images per sampling job
    repeats: int = 10
    waiting: int = 8                         # jobs waiting behind the running one


# ---- images: bytes <-> tensors in [0, 1] at the model's resolution ------------------------------------
# Uploads follow sdekit.images' rule (the same as `sdekit edit`): refuse non-images, truncated files
# and decompression bombs; composite transparency over black; centre-crop to the model's aspect;
# resize; grey by ITU-R 601 luma for 1-channel models. The canvas, an exact zoom of the model's
# pixels, is averaged block by block, so what the page shows is what the model gets.

def load_upload(data: bytes, shape, limits: Limits = Limits(), what: str = "image"):
    """Bytes of an image file -> :class:`sdekit.images.LoadedImage` at ``shape`` = (C, H, W)."""
    from ..images import load_image
    if len(data) > limits.upload_bytes:
        raise UserError(f"{what} is {len(data) / 1e6:.1f} MB; the limit is {limits.upload_bytes / 1e6:.1f} MB")
    if not data:
        raise UserError(f"{what} is an empty file")
    with tempfile.TemporaryDirectory(prefix="sdekit-web-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            return load_image(path, shape, max_pixels=limits.pixels)
        except UserError as e:
            raise UserError(str(e).replace(str(path), what)) from None


def _zoom(data: bytes, H: int, W: int) -> int:
    """k when the image is exactly k times the model's size (the page's canvas), else 0."""
    from PIL import Image
    try:
        w, h = Image.open(io.BytesIO(data)).size          # the header only
    except Exception:
        return 0
    return w // W if w % W == 0 and h % H == 0 and w // W == h // H else 0


def load_canvas(data: bytes, shape, limits: Limits = Limits(), what: str = "image"):
    """The page's canvas (k x k screen pixels per model pixel) -> LoadedImage at ``shape``: each model
    pixel is the mean of its block (alpha: the block is opaque when at least half of it is), so an
    image shown at zoom k comes back unchanged. Any other size goes by the rule of sdekit.images."""
    import torch.nn.functional as F
    C, H, W = shape
    k = _zoom(data, H, W)
    if k <= 1:
        return load_upload(data, shape, limits, what)
    big = load_upload(data, (C, k * H, k * W), limits, what)
    alpha = None if big.alpha is None else (F.avg_pool2d(big.alpha, k) >= 0.5).float()
    return type(big)(F.avg_pool2d(big.pixels, k), alpha, big.size)


def regenerate_mask(data: bytes, shape, limits: Limits = Limits()) -> torch.Tensor:
    """The page's mask layer (a PNG, painted = opaque) -> [1, 1, H, W], 1 = regenerate."""
    C, H, W = shape
    alpha = load_canvas(data, (1, H, W), limits, "mask").alpha
    return torch.ones(1, 1, H, W) if alpha is None else alpha        # no transparency: all painted


def png_bytes(u: torch.Tensor) -> bytes:
    """One image [C, H, W] in [0, 1] -> PNG bytes."""
    from ..images import to_pil
    buf = io.BytesIO()
    to_pil(u).save(buf, format="PNG")
    return buf.getvalue()


def data_url_bytes(url, what: str) -> bytes:
    """``data:image/png;base64,...`` -> bytes."""
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url[:100]:
        raise UserError(f"{what} must be an image data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{what} is not valid base64") from None


# ---- parameters -----------------------------------------------------------------------------------

@dataclass
class Task:
    """One request, validated. Images are in [0, 1] at the model's resolution, batch 1.

    edit: SDEdit of ``image`` from t0_frac * T (mask: 1 = regenerate, None = everything);
    inpaint: fill the masked pixels of ``image`` (mask: 1 = fill); sample: n images from the prior."""
    kind: str
    n: int = 4
    steps: int = 100
    sampler: str = "reverse_diffusion"
    seed: int = 0
    t0_frac: float = 0.5
    repeats: int = 1
    label: int = -1
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def expected_nfe(self) -> int:
        """Score evaluations a run should take, for the progress bar (an estimate: capped at 99%)."""
        per_step = {"pc": 2, "heun": 2, "ode": 3}.get(self.sampler, 1)
        return self.steps * per_step * (self.repeats if self.kind == "edit" else 1)


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None or v == "":
        return default
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a whole number, got {v!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise UserError(f"{key} must be a whole number, got {v!r}")
    if not lo <= f <= hi:
        raise UserError(f"{key} must lie in {lo}..{hi}, got {int(f)}")
    return int(f)


def _float(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a number, got {v!r}") from None
    if not (math.isfinite(f) and lo < f <= hi):
        raise UserError(f"{key} must lie in ({lo}, {hi}], got {v!r}")
    return f


def samplers_for(kind: str) -> tuple[str, ...]:
    """Sampler names a job kind accepts."""
    from ..samplers import SAMPLERS
    first = {"edit": "reverse_diffusion", "inpaint": "pc", "sample": "heun"}[kind]   # the library's defaults
    return (first,) + tuple(s for s in SAMPLERS if s != first)


def parse_task(model, body: dict, limits: Limits = Limits()) -> Task:
    """Validate a job request (the decoded JSON body) into a Task."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise UserError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    n_max = limits.samples if kind == "sample" else limits.results
    t = Task(kind=kind,
             n=_int(body, "n", 4, 1, n_max),
             steps=_int(body, "steps", 20 if kind == "sample" else 100, 1, limits.steps),
             seed=_int(body, "seed", int(time.time_ns() % 2**31), 0, 2**63 - 1),
             label=_int(body, "label", -1, -1, max(model.num_classes - 1, -1)))
    t.sampler = str(body.get("sampler") or samplers_for(kind)[0]).lower()
    if t.sampler not in samplers_for(kind):
        raise UserError(f"sampler must be one of {', '.join(samplers_for(kind))}, got {t.sampler!r}")
    if kind == "edit":
        t.t0_frac = _float(body, "t0", 0.5, 0.0, 1.0)
        t.repeats = _int(body, "repeats", 1, 1, limits.repeats)
    if kind in ("edit", "inpaint"):
        if not body.get("image"):
            raise UserError("paint something or upload an image first")
        t.image = load_canvas(data_url_bytes(body["image"], "image"), model.shape, limits).pixels
        if body.get("mask"):
            t.mask = regenerate_mask(data_url_bytes(body["mask"], "mask"), model.shape, limits)
            if not t.mask.any():
                t.mask = None
        if kind == "inpaint" and t.mask is None:
            raise UserError("paint the region to fill on the mask layer first")
    return t


# ---- the work ------------------------------------------------------------------------------------

class Cancelled(Exception):
    """The job was cancelled while it ran."""


def run_task(model, task: Task, on_step=None) -> dict:
    """Run one task on ``model``. ``on_step(nfe)`` is called after every score evaluation (it may
    raise to stop the run). Returns {"results": [n, C, H, W] in [0, 1], "guide", "mask"}."""
    import sdekit
    base = model.conditional(task.label) if task.label >= 0 else model.score_fn
    nfe = 0

    def score_fn(x, t):
        nonlocal nfe
        out = base(x, t)
        nfe += 1
        if on_step is not None:
            on_step(nfe)
        return out

    g = torch.Generator(device="cpu").manual_seed(task.seed)
    sde, n = model.sde, task.n
    if task.kind == "sample":
        out = sdekit.sample(sde, score_fn, (n, *model.shape), sampler=task.sampler, steps=task.steps,
                            generator=g, device=model.device)
        return {"results": model.to_unit(out), "guide": None, "mask": None}
    x = model.from_unit(task.image).to(model.device).expand(n, *model.shape).contiguous()
    keep = None if task.mask is None else (1 - task.mask).to(x.device).expand(n, 1, *model.shape[1:])
    if task.kind == "edit":                                 # the library's masks: 1 = keep the guide
        out = sdekit.sdedit(sde, score_fn, x, t0=task.t0_frac, steps=task.steps, mask=keep,
                            repeats=task.repeats, sampler=task.sampler, generator=g)
    else:
        out = sdekit.inpaint(sde, score_fn, x, keep, steps=task.steps, sampler=task.sampler, generator=g)
    return {"results": model.to_unit(out), "guide": task.image, "mask": task.mask}


# ---- the queue -----------------------------------------------------------------------------------

class Busy(Exception):
    """The queue is full."""


@dataclass
class Job:
    task: Task
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "queued"                   # queued, running, done, error, cancelled
    nfe: int = 0
    message: str = ""
    pngs: dict = field(default_factory=dict)  # name -> PNG bytes: result-0.., guide, mask, grid
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        return min(0.99, self.nfe / max(1, self.task.expected_nfe()))


class JobQueue:
    """First come, first served, one job at a time (the CPU is the bottleneck); a bounded wait list."""

    def __init__(self, model, limits: Limits = Limits(), keep: int = 32):
        self.model, self.limits, self.keep = model, limits, keep
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self.cond = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="sdekit-web-worker", daemon=True)
        self.worker.start()

    def submit(self, task: Task) -> Job:
        with self.cond:
            if len(self.waiting) >= self.limits.waiting:
                raise Busy(f"busy: {len(self.waiting)} jobs are waiting; try again in a minute")
            job = Job(task)
            self.jobs[job.id] = job
            self.waiting.append(job)
            while len(self.jobs) > self.keep:                 # forget the oldest finished jobs
                old = next((j for j in self.jobs.values() if j.status not in ("queued", "running")), None)
                if old is None:
                    break
                del self.jobs[old.id]
            self.cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self.cond:
            return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 = next to run; 0 = running or finished."""
        with self.cond:
            return next((i + 1 for i, j in enumerate(self.waiting) if j is job), 0)

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancel.set()
            if job in self.waiting:
                self.waiting.remove(job)
                job.status, job.message = "cancelled", "cancelled"

    def close(self) -> None:
        with self.cond:
            self.closed = True
            if self.running is not None:
                self.running.cancel.set()
            self.cond.notify_all()

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                job = self.running = self.waiting.popleft()
                job.status, job.started = "running", time.monotonic()
            self._run(job)
            with self.cond:
                self.running = None

    def _run(self, job: Job) -> None:
        def on_step(nfe):
            job.nfe = nfe
            if job.cancel.is_set():
                raise Cancelled
        try:
            out = run_task(self.model, job.task, on_step)
            pngs = {f"result-{i}": png_bytes(u) for i, u in enumerate(out["results"])}
            from ..data import grid
            pngs["grid"] = png_bytes(torch.from_numpy(grid(out["results"])).permute(2, 0, 1) / 255)
            if out["guide"] is not None:
                pngs["guide"] = png_bytes(out["guide"][0])
            if out["mask"] is not None:
                pngs["mask"] = png_bytes(out["mask"][0])
            job.pngs, job.status = pngs, "done"
            job.message = f"{len(out['results'])} images in {time.monotonic() - job.started:.1f} s ({job.nfe} score evaluations)"
        except Cancelled:
            job.status, job.message = "cancelled", "cancelled"
        except (UserError, ValueError) as e:
            job.status, job.message = "error", (str(e).strip().splitlines() or [type(e).__name__])[0]
        except Exception as e:                # keep serving whatever a run does
            job.status, job.message = "error", f"internal error: {type(e).__name__}: {e}".splitlines()[0]
            print(f"sdekit serve: job {job.id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            job.finished = time.monotonic()


# ---- HTTP ------------------------------------------------------------------------------------------

class App:
    """What the handler needs: the model, its queue and the limits."""

    def __init__(self, model, limits: Limits = Limits()):
        self.model, self.limits = model, limits
        self.queue = JobQueue(model, limits)

    def info(self) -> dict:
        m = self.model
        C, H, W = m.shape
        return {"name": m.name, "shape": [C, H, W], "num_classes": m.num_classes,
                "sde": type(m.sde).__name__, "T": float(m.sde.T),
                "samplers": {k: list(samplers_for(k)) for k in KINDS},
                "limits": {"upload_bytes": self.limits.upload_bytes, "steps": self.limits.steps,
                           "results": self.limits.results, "samples": self.limits.samples,
                           "repeats": self.limits.repeats}}

    def job_status(self, job: Job) -> dict:
        d = {"id": job.id, "kind": job.task.kind, "status": job.status, "progress": round(job.progress(), 4),
             "nfe": job.nfe, "position": self.queue.position(job), "message": job.message,
             "seed": job.task.seed}
        if job.status == "done":
            d["results"] = [f"/api/jobs/{job.id}/{k}.png" for k in job.pngs if k.startswith("result-")]
            d["images"] = {k: f"/api/jobs/{job.id}/{k}.png" for k in job.pngs if not k.startswith("result-")}
        return d


class Handler(BaseHTTPRequestHandler):
    server_version = "sdekit"
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> App:
        return self.server.app

    def log_message(self, fmt, *args):       # quiet: errors are logged where they happen
        pass

    # -- responses --
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), "application/json", {"Cache-Control": "no-store", **(headers or {})})

    def _error(self, status: int, message: str, headers: dict | None = None):
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes | None:
        """The request body, or None after an error response (missing length, too large)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        n = int(length)
        if n > self.app.limits.upload_bytes:
            self.close_connection = True      # the unread body must not be parsed as a request
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"upload is {n / 1e6:.1f} MB; the limit is {self.app.limits.upload_bytes / 1e6:.1f} MB")
            return None
        return self.rfile.read(n)

    def _guard(self, fn):
        try:
            fn()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except UserError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:                # never let one request take the server down
            print(f"sdekit serve: {self.command} {self.path}: {type(e).__name__}: {e}", file=sys.stderr)
            try:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}")
            except OSError:
                self.close_connection = True

    # -- routes --
    def do_GET(self):
        self._guard(self._get)

    def do_HEAD(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _get(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if m := re.fullmatch(r"/static/([\w-]+\.(?:js|css|html|png))", path):
            return self._static(m.group(1))
        if path == "/api/info":
            return self._json(200, self.app.info())
        if m := re.fullmatch(r"/api/jobs/(\w+)", path):
            job = self.app.queue.get(m.group(1))
            return self._json(200, self.app.job_status(job)) if job else self._error(404, "no such job (finished jobs are kept for a while only)")
        if m := re.fullmatch(r"/api/jobs/(\w+)/([\w-]+)\.png", path):
            job = self.app.queue.get(m.group(1))
            if job is None or m.group(2) not in job.pngs:
                return self._error(404, "no such image")
            return self._send(200, job.pngs[m.group(2)], "image/png", {"Cache-Control": "private, max-age=3600"})
        self._error(404, f"no such page: {path}")

    def _static(self, name: str):
        f = STATIC / name
        if not f.is_file():
            return self._error(404, f"no such file: {name}")
        self._send(200, f.read_bytes(), CONTENT_TYPES[f.suffix], {"Cache-Control": "no-cache"})

    def _post(self):
        path = self.path.split("?", 1)[0]
        if path == "/api/upload":
            return self._upload()
        if path == "/api/jobs":
            return self._submit()
        if m := re.fullmatch(r"/api/jobs/(\w+)/cancel", path):
            if self._body() is None:
                return
            job = self.app.queue.get(m.group(1))
            if job is None:
                return self._error(404, "no such job")
            self.app.queue.cancel(job)
            return self._json(200, self.app.job_status(job))
        self._error(404 if not path.startswith("/api/") else 405, f"no such action: POST {path}")

    def _upload(self):
        """An image file (raw body) -> the same image at the model's resolution, as a PNG data URL."""
        data = self._body()
        if data is None:
            return
        im = load_upload(data, self.app.model.shape, self.app.limits, "the file")
        url = "data:image/png;base64," + base64.b64encode(png_bytes(im.pixels[0])).decode()
        self._json(200, {"image": url, "width": im.size[0], "height": im.size[1]})

    def _submit(self):
        data = self._body()
        if data is None:
            return
        try:
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError("the request body is not valid JSON") from None
        task = parse_task(self.app.model, body, self.app.limits)
        try:
            job = self.app.queue.submit(task)
        except Busy as e:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(e), {"Retry-After": "30"})
        self._json(HTTPStatus.ACCEPTED, self.app.job_status(job))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    app: App | None = None

    def handle_error(self, request, client_address):        # a dropped connection is not news
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def bind(host: str = "127.0.0.1", port: int = 7860) -> Server:
    """Open the listening socket (before the model loads, so a busy port fails at once)."""
    try:
        return Server((host, port), Handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use; choose another with --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def make_server(model, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()) -> Server:
    """A ready server for ``model`` (port 0 = any free port: see ``server.server_address``)."""
    server = bind(host, port)
    server.app = App(model, limits)
    return server


def start_in_thread(server: Server) -> threading.Thread:
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    th.start()
    return th


def stop(server: Server) -> None:
    server.shutdown()
    if server.app is not None:
        server.app.queue.close()
    server.server_close()
