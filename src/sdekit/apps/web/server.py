"""``sdekit serve``: the page's HTTP app (:mod:`.app`, Starlette) served by uvicorn on a socket of our own.

The work is in modules without HTTP: :mod:`.tasks` (``parse_task``, ``run_task``), :mod:`.jobs` (the
queue), :mod:`.uploads` (image bytes <-> tensors) and :mod:`.limits`; their names are also importable
from here. This module only listens: it binds the socket first (so a busy port fails before the model
loads), removes the upload files of servers that were killed, and runs uvicorn with the limits on
connections and on how long a client may take to send its request.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import socket
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sdekit.core.errors import UserError
from sdekit.apps.web.app import App, Site
from sdekit.apps.web.jobs import Busy, Cancelled, Job, JobQueue
from sdekit.apps.web.limits import Limits
from sdekit.apps.web.tasks import KINDS, Task, parse_task, run_task, samplers_for
from sdekit.apps.web.uploads import data_url_bytes, keep_mask, load_canvas, load_upload, png_bytes, remove_stale, strength_map

__all__ = ["App", "Site", "make_app", "Busy", "Cancelled", "Job", "JobQueue", "KINDS", "Limits", "Server", "Task", "bind",
           "data_url_bytes", "keep_mask", "load_canvas", "load_upload", "make_server", "parse_task",
           "png_bytes", "run_task", "samplers_for", "start_in_thread", "stop", "strength_map"]


class DeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with one more timeout: a connection on which no request is being
    answered is closed ``head_seconds`` after it opened or after its last answer, whatever it sends
    meanwhile. uvicorn's keep-alive timeout restarts at every byte, so without this a client that
    connects and sends nothing, or trickles its headers, would hold a connection forever. The app
    bounds the time to receive a body (``Limits.body_seconds``)."""

    def __init__(self, *args, head_seconds: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_seconds = head_seconds
        self.deadline = None

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        if not self._answering() and not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.head_seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if not self._answering() and not self.transport.is_closing():
            if self.conn.our_state is not h11.ERROR:
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._answering():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


class StoppingServer(uvicorn.Server):
    """uvicorn's server, which on SIGINT / SIGTERM stops serving and returns (uvicorn would raise the
    signal again once it stopped: a KeyboardInterrupt, or the end of the process for SIGTERM, while the
    job queue's worker may still be inside the model). The caller then stops the queue."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            self.signals = list(self._captured_signals)
            self._captured_signals.clear()


class Server:
    """A listening socket and, once ``app`` (an :class:`App`, or a :class:`Site` of several) is set, uvicorn serving it there.
    ``server_address`` is (host, port) as bound (port 0 asks for any free port)."""

    def __init__(self, sock: socket.socket):
        self.socket = sock
        self.server_address = sock.getsockname()
        self.app: App | Site | None = None
        self.thread: threading.Thread | None = None       # set by start_in_thread
        self._uvicorn: uvicorn.Server | None = None
        self._lock = threading.Lock()

    def _server(self) -> uvicorn.Server:
        with self._lock:
            if self._uvicorn is None:
                if self.app is None:
                    raise RuntimeError("set server.app before serving")
                limits = self.app.limits
                config = uvicorn.Config(
                    self.app.asgi, http=functools.partial(DeadlineProtocol, head_seconds=limits.head_seconds),
                    lifespan="off", log_config=None, access_log=False, server_header=False,
                    limit_concurrency=limits.connections, timeout_keep_alive=5, timeout_graceful_shutdown=3)
                self._uvicorn = StoppingServer(config)
            return self._uvicorn

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or, in the main thread, until SIGINT / SIGTERM, which end it
        as :meth:`shutdown` does, and return)."""
        self._server().run(sockets=[self.socket])

    def shutdown(self) -> None:
        self._server().should_exit = True

    def server_close(self, seconds: float | None = None) -> bool:
        """Stop the job queue (cancel its jobs and wait up to ``seconds``, default
        ``Limits.stop_seconds``, for its worker) and close the socket. Returns whether the worker ended."""
        stopped = self.app.close(seconds) if self.app is not None else True
        self.socket.close()
        return stopped


def bind(host: str = "127.0.0.1", port: int = 7860) -> Server:
    """Open the listening socket (before the model loads, so a busy port fails at once), after removing
    the upload files that killed servers left behind."""
    remove_stale()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use; choose another with --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return Server(sock)


def make_app(models, limits: Limits = Limits(), host: str = "127.0.0.1", allow_hosts=()) -> App | Site:
    """The app for a model (at ``/``), or for a list of models a :class:`Site` (each at ``/m/<name>/``, the
    first also at ``/``; a list of one is served as that model alone)."""
    if isinstance(models, (list, tuple)) and len(models) == 1:
        models = models[0]
    if isinstance(models, (list, tuple)):
        return Site(models, limits, bound=host, allow_hosts=allow_hosts)
    return App(models, limits, bound=host, allow_hosts=allow_hosts)


def make_server(model, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits(), allow_hosts=()) -> Server:
    """A ready server for ``model``, or for a list of models (:func:`make_app`) (port 0 = any free port:
    see ``server.server_address``)."""
    server = bind(host, port)
    try:
        server.app = make_app(model, limits, host, allow_hosts)
    except BaseException:
        server.socket.close()
        raise
    return server


def start_in_thread(server: Server) -> threading.Thread:
    th = threading.Thread(target=server.serve_forever, name="sdekit-serve", daemon=True)
    server.thread = th
    th.start()
    return th


def stop(server: Server) -> None:
    """Stop serving, wait for the serving thread, cancel the running job and close the socket."""
    server.shutdown()
    if server.thread is not None:
        server.thread.join(10)
    server.server_close()
