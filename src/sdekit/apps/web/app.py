"""The page's HTTP app (Starlette): the page, its JSON API over the job queue, and what every request must pass.

Refused before any work is done, each with a 4xx answer ``{"error": "<one line>"}``:

* a Host header that does not name this server (DNS rebinding): allowed are ``localhost``, loopback
  addresses, the address the server listens on, any IP address when it listens on all interfaces, and
  the names given as ``allow_hosts`` (400);
* an Origin header other than the page's own, and a browser's cross-site request to ``/api/`` (403);
* a body of another type than the endpoint takes: ``application/json`` for jobs and cancelling,
  ``application/octet-stream`` or ``image/*`` for uploads (415), so that no other site can send one
  without a CORS preflight, which this server never grants;
* a body larger than ``Limits.upload_bytes`` (1 KB where none is expected) (413), or one that does not
  arrive within ``Limits.body_seconds`` (408);
* a body that is not a JSON object, nests too deeply, or holds out-of-range values or undecodable images (400).

Every answer forbids framing (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``) and loading
anything from elsewhere. Images are decoded in worker threads, at most ``Limits.decodes`` at a time.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import re
import sys
import time
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sdekit.data.datasets import background, class_names, data_kind
from sdekit.data.images import follow_polarity
from sdekit.core.errors import UserError
from sdekit.apps.web.jobs import Busy, Job, JobQueue
from sdekit.apps.web.limits import Limits
from sdekit.apps.web.tasks import KINDS, Task, default_steps, parse_task, samplers_for
from sdekit.apps.web.uploads import load_upload, png_bytes, return_memory

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Resource-Policy": "same-origin"}
SMALL_BODY = 1024                            # bytes, for a cancel request (routes that take no body never read one)
WILDCARDS = ("0.0.0.0", "::", "")


class Refused(Exception):
    """A request this server will not serve: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The answer to a refused request: ``{"error": message}``, one line."""
    line = (str(message).strip().splitlines() or [f"error {status}"])[0]
    return JSONResponse({"error": line}, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


# ---- who may ask ---------------------------------------------------------------------------------------

_HOST = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::\d{1,5})?")


def host_name(header: str | None) -> str | None:
    """The name in a Host header (lower case, no port, no brackets), or None when it is malformed."""
    m = _HOST.fullmatch(header or "")
    return None if m is None else (m["ip6"] or m["name"]).lower().rstrip(".")


def host_allowed(name: str, bound: str, allow_hosts=()) -> bool:
    """Whether a Host names this server: ``localhost``, a loopback address, the address it listens on,
    any IP address when it listens on all interfaces, or one of ``allow_hosts``. A name that an attacker
    controls (DNS rebinding) is none of these."""
    if name in ("localhost", bound.lower()) or name in {h.lower() for h in allow_hosts}:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or bound in WILDCARDS


def route_path(scope) -> str:
    """The request's path below the prefix an app is mounted at (``/m/<name>/api/jobs`` -> ``/api/jobs``)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def depth(scope) -> int:
    """How many path segments a mounted app's prefix adds below the site's root (``/m/<name>``: 2)."""
    return scope.get("root_path", "").count("/") - scope.get("app_root_path", "").count("/")


class Guard:
    """ASGI middleware: refuses requests that are not the page's own before they reach a route (see the
    module's docstring), and adds :data:`SECURITY_HEADERS` to every answer."""

    def __init__(self, app, bound: str, allow_hosts=()):
        self.app, self.bound, self.allow_hosts = app, bound, tuple(allow_hosts)

    def refusal(self, scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = host_name(host)
        if name is None or not host_allowed(name, self.bound, self.allow_hosts):
            return error(400, f"the Host header {host[:60]!r} does not name this server; "
                              "open the page by its address, or start it with --allow-host NAME")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope['scheme']}://{host}".lower():
            return error(403, f"requests from {origin[:60]!r} are refused: only the page itself may use this server")
        site = headers.get("sec-fetch-site", "same-origin")
        if route_path(scope).startswith("/api/") and site not in ("same-origin", "none"):
            return error(403, f"{site} requests to the API are refused: only the page itself may use this server")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        refused = self.refusal(scope)
        if refused is not None:
            return await refused(scope, receive, send_secured)
        await self.app(scope, receive, send_secured)


# ---- bodies ----------------------------------------------------------------------------------------------

def require_type(request: Request, accepted: tuple[str, ...], what: str) -> None:
    """415 unless the request's Content-Type is one of ``accepted`` (``type/*`` matches a family)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not any(ctype == a or (a.endswith("/*") and ctype.startswith(a[:-1])) for a in accepted):
        raise Refused(415, f"{what} must be sent as {' or '.join(accepted)}, not {ctype[:40] or 'without a type'}")


async def read_body(request: Request, seconds: float) -> bytes:
    """The whole body (its size is bounded by the route's ``max_body_size``); 408 when it takes longer
    than ``seconds`` to arrive."""
    try:
        with anyio.fail_after(seconds):
            return await request.body()
    except TimeoutError:
        raise Refused(408, f"the request body did not arrive within {seconds:g} s") from None
    except ClientDisconnect:
        raise Refused(400, "the client closed the connection before sending its body") from None


def json_object(data: bytes) -> dict:
    """A request body -> a JSON object; UserError for anything else."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise UserError("the request body nests too deeply") from None
    except ValueError:                       # bad JSON, bad UTF-8, a number too long
        raise UserError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    return body


# ---- what the page paints on ------------------------------------------------------------------------------

def polarity(model) -> str:
    """How the model's pictures look, from the colour they are drawn on (:func:`sdekit.data.datasets.background`),
    which sets the page's palette and hint: "light-on-dark" on a dark background (digits, MNIST: light
    strokes on black), so the brush starts white; "on-white" on a light one (emoji: colour on white), so
    the palette holds saturated colours; "natural" otherwise (photographs: any colour anywhere, on mid
    grey, the middle of the data range, painted or uploaded over)."""
    level = sum(background(model.config)) / model.shape[0]
    return "light-on-dark" if level <= 0.25 else "on-white" if level >= 0.75 else "natural"


def css_colour(values) -> str:
    """Pixel values in [0, 1] (one for grey, three for RGB) -> ``#rrggbb``."""
    rgb = [round(255 * float(v)) for v in values] * (3 // len(values))
    return "#" + "".join(f"{v:02x}" for v in rgb)


# ---- the app -----------------------------------------------------------------------------------------------

class App:
    """The model, its job queue and the limits, and the Starlette app (``asgi``) that serves them."""

    def __init__(self, model, limits: Limits = Limits(), bound: str = "127.0.0.1", allow_hosts=()):
        if len(model.shape) != 3 or model.shape[0] not in (1, 3):
            raise UserError(f"the page paints grey or RGB images; {model.name} takes samples of shape "
                            f"{tuple(model.shape)}, not (1 or 3, H, W)")
        self.model, self.limits = model, limits
        self.menu: list[dict] = []              # the site's models ({"name", "path", "shape", "app"}), set by :class:`Site`
        self.queue = JobQueue(model, limits)
        self.decoders = anyio.CapacityLimiter(limits.decodes)
        big = limits.upload_bytes
        self.asgi = Starlette(
            routes=[Route("/", self.page, methods=["GET"]),
                    Mount("/static", StaticFiles(directory=STATIC), name="static"),
                    Route("/api/info", self.info_route, methods=["GET"]),
                    Route("/api/upload", self.upload, methods=["POST"], max_body_size=big),
                    Route("/api/jobs", self.submit, methods=["POST"], max_body_size=big),
                    Route("/api/jobs/{job_id}", self.status, methods=["GET"]),
                    Route("/api/jobs/{job_id}/{name}.png", self.image, methods=["GET"]),
                    Route("/api/jobs/{job_id}/cancel", self.cancel, methods=["POST"], max_body_size=SMALL_BODY)],
            middleware=[Middleware(Guard, bound=bound, allow_hosts=allow_hosts)],
            exception_handlers={UserError: self.on_user_error, Refused: self.on_refused, HTTPException: self.on_http_error,
                                Busy: self.on_busy, Exception: self.on_crash})

    # -- what the page reads --
    def info(self, up: int = 0) -> dict:
        """The model as the page needs it: shape [C, H, W] (the canvas is H x W model pixels, a colour
        palette for C = 3, grey for C = 1), ``polarity`` (:func:`polarity`) and the canvas's starting
        ``background`` (``#rrggbb``, :func:`sdekit.data.datasets.background`), the SDE, classes (``class_names``: a
        name per class where the data have them, else null; ``reads_class``: whether edits can read the drawn
        class), samplers and defaults (t0, steps, label) per tab, the limits, and ``models``: the site's
        models for the page's menu, each ``{"name", "href", "shape", "current"}`` with ``href`` relative to
        a page ``up`` path segments below the site's root."""
        m = self.model
        C, H, W = m.shape
        names = class_names(m.config)
        return {"name": m.name, "shape": [C, H, W], "num_classes": m.num_classes, "data": m.config.get("data"),
                "data_kind": data_kind(m.config.get("data")) or None, "class_names": names and list(names),
                "reads_class": getattr(m, "classifier", None) is not None,
                "polarity": polarity(m), "background": css_colour(background(m.config)),
                "models": [{"name": e["name"], "href": "../" * up + e["path"], "shape": e["shape"],
                            "current": e["app"] is self} for e in self.menu],
                "sde": type(m.sde).__name__, "T": float(m.sde.T),
                "samplers": {k: list(samplers_for(k, m)) for k in KINDS},
                "defaults": {k: self.defaults(k) for k in KINDS},
                "limits": {"upload_bytes": self.limits.upload_bytes, "steps": self.limits.steps,
                           "results": self.limits.results, "samples": self.limits.samples,
                           "repeats": self.limits.repeats}}

    def defaults(self, kind: str) -> dict:
        """The library's defaults for a tab, which the page starts from: sampler (sdekit.policy), steps (the
        sampler registry's, SDEdit's steps rule), t0 (the model's calibrated, else the policy's), the number of
        results, the repeats, and the class (the bundle's default edit's: "auto" or -1)."""
        from sdekit.tasks.sdedit import default_class, default_t0
        label = default_class(self.model) if kind == "edit" else -1
        sampler, t0 = samplers_for(kind, self.model)[0], default_t0(self.model, label != -1)
        return {"sampler": sampler, "steps": default_steps(self.model, kind, sampler, t0), "t0": t0,
                "n": 16 if kind == "sample" else Task.n, "repeats": Task.repeats, "label": label}

    def job_status(self, job: Job, root: str = "") -> dict:
        """A job as the page polls it; image paths start with ``root``, the prefix the app is mounted at."""
        d = {"id": job.id, "kind": job.task.kind, "status": job.status, "progress": round(job.progress(), 4),
             "nfe": job.nfe, "position": self.queue.position(job), "ahead": self.queue.ahead(job), "message": job.message,
             "seed": job.task.seed, "condition": job.condition}
        if job.status == "done":
            d["results"] = [f"{root}/api/jobs/{job.id}/{k}.png" for k in job.pngs if k.startswith("result-")]
            d["images"] = {k: f"{root}/api/jobs/{job.id}/{k}.png" for k in job.pngs if not k.startswith("result-")}
        return d

    def close(self, seconds: float | None = None) -> bool:
        """Stop the job queue (:meth:`JobQueue.close`); whether its worker ended."""
        return self.queue.close(seconds)

    async def decode(self, fn, *args):
        """Run ``fn(*args)`` (image decoding) in a worker thread, at most ``limits.decodes`` at a time,
        and return the memory it used to the system afterwards."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.decoders)
        finally:
            return_memory()

    # -- routes --
    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def info_route(self, request: Request) -> Response:
        return JSONResponse(self.info(depth(request.scope)), headers={"Cache-Control": "no-store"})

    async def upload(self, request: Request) -> Response:
        """An image file (the raw body) -> the image at the model's resolution as a PNG data URL."""
        require_type(request, ("application/octet-stream", "image/*"), "an upload")
        data = await read_body(request, self.limits.body_seconds)
        return JSONResponse(await self.decode(self._converted, data))

    def _converted(self, data: bytes) -> dict:
        im = load_upload(data, self.model.shape, self.limits, "the file", background=background(self.model.config))
        im, inverted = follow_polarity(im, background(self.model.config))
        url = "data:image/png;base64," + base64.b64encode(png_bytes(im.pixels[0])).decode()
        return {"image": url, "width": im.size[0], "height": im.size[1], "inverted": inverted}

    async def submit(self, request: Request) -> Response:
        require_type(request, ("application/json",), "a job")
        data = await read_body(request, self.limits.body_seconds)
        task = await self.decode(lambda: parse_task(self.model, json_object(data), self.limits))
        return JSONResponse(self.job_status(self.queue.submit(task), request.scope.get("root_path", "")), status_code=202,
                            headers={"Cache-Control": "no-store"})

    def _job(self, request: Request) -> Job:
        job = self.queue.get(request.path_params["job_id"])
        if job is None:
            raise Refused(404, "no such job (finished jobs are kept for a while only)")
        return job

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.job_status(self._job(request), request.scope.get("root_path", "")),
                            headers={"Cache-Control": "no-store"})

    async def image(self, request: Request) -> Response:
        png = self._job(request).pngs.get(request.path_params["name"])
        if png is None:
            raise Refused(404, "no such image")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def cancel(self, request: Request) -> Response:
        require_type(request, ("application/json",), "a cancel request")
        data = await read_body(request, self.limits.body_seconds)
        if data.strip():
            json_object(data)
        job = self._job(request)
        self.queue.cancel(job)
        return JSONResponse(self.job_status(job, request.scope.get("root_path", "")), headers={"Cache-Control": "no-store"})

    # -- errors: one line each --
    async def on_user_error(self, request: Request, exc: UserError) -> Response:
        return error(400, str(exc))

    async def on_busy(self, request: Request, exc: Busy) -> Response:
        return error(503, str(exc), {"Retry-After": "30"})

    async def on_refused(self, request: Request, exc: Refused) -> Response:
        return error(exc.status, str(exc))

    async def on_http_error(self, request: Request, exc: HTTPException) -> Response:
        """Starlette's own refusals (no route, wrong method, body too large), in words."""
        path = request.url.path[:80]
        message = {404: f"no such page: {path}", 405: f"{request.method} is not allowed on {path}",
                   413: f"the request body is larger than the limit of "
                        f"{request.scope.get(MAX_BODY_SIZE_SCOPE_KEY, 0) / 1e6:.3g} MB"}
        return error(exc.status_code, message.get(exc.status_code, exc.detail), exc.headers)

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        print(f"sdekit serve: {request.method} {request.url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return error(500, f"internal error: {type(exc).__name__}")


# ---- several models ------------------------------------------------------------------------------------------

def slug(name: str, taken=()) -> str:
    """A model's name as a path segment (letters, digits, ``.``, ``_``, ``-``), unlike those ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.") or "model"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}-{k}", k + 1
    return out


class Site:
    """Several models behind one server: each model its own :class:`App` (page, API, job queue) under
    ``/m/<name>/``, and the first one's also at ``/``; every page has a menu of them all (``/api/info``:
    ``models``). The page uses relative paths, so it works wherever an app is mounted."""

    def __init__(self, models, limits: Limits = Limits(), bound: str = "127.0.0.1", allow_hosts=()):
        self.apps: list[App] = []
        try:
            for m in models:
                self.apps.append(App(m, limits, bound=bound, allow_hosts=allow_hosts))
        except BaseException:
            self.close(0)
            raise
        if not self.apps:
            raise UserError("no model to serve")
        self.limits, names = limits, []
        for app in self.apps:
            names.append(slug(app.model.name, names))
        menu = [{"name": n, "path": f"m/{n}/", "shape": list(a.model.shape), "app": a} for n, a in zip(names, self.apps)]
        routes = []
        for n, app in zip(names, self.apps):
            app.menu = menu
            routes += [Route(f"/m/{n}", self.to_folder, methods=["GET"]), Mount(f"/m/{n}", app=app.asgi)]
        first = self.apps[0]
        self.asgi = Starlette(routes=routes + [Mount("", app=first.asgi)],
                              middleware=[Middleware(Guard, bound=bound, allow_hosts=allow_hosts)],
                              exception_handlers={HTTPException: first.on_http_error, Exception: first.on_crash})

    @property
    def queue(self) -> JobQueue:
        """The first model's job queue."""
        return self.apps[0].queue

    async def to_folder(self, request: Request) -> Response:
        """``/m/<name>`` -> ``/m/<name>/``, where the page's relative paths resolve."""
        return RedirectResponse(request.url.path.rsplit("/", 1)[-1] + "/", status_code=308)

    def close(self, seconds: float | None = None) -> bool:
        """Stop every model's job queue: all are cancelled at once, then waited for together up to
        ``seconds`` (default ``Limits.stop_seconds``). Returns whether every worker ended."""
        for app in self.apps:
            app.close(0)
        wait = (self.apps[0].limits.stop_seconds if self.apps else 0) if seconds is None else seconds
        end = time.monotonic() + wait
        return all([app.close(max(0.0, end - time.monotonic())) for app in self.apps])
