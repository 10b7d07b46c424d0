"""The page's job queue: one worker thread runs tasks in order (the CPU is the bottleneck), a bounded wait
list answers "busy" beyond it, and finished jobs keep their PNGs until their clients have had a fair
chance to fetch them.

Retention (:meth:`JobQueue.forget`): a finished job is kept for ``Limits.keep_seconds`` after it finished
or after its status or an image of it was last read, whichever is later, and beyond that as long as fewer
than ``max(Limits.keep_jobs, 4 * (Limits.waiting + 1))`` finished jobs are newer; so every accepted job,
however long the queue, is kept at least that long after its result appears. Above ``Limits.keep_bytes``
of result PNGs in all, the oldest finished jobs are forgotten first whatever their age (a bound on memory)."""
from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import torch

from sdekit.core.errors import UserError
from sdekit.apps.web.limits import Limits
from sdekit.apps.web.tasks import Task, run_task
from sdekit.apps.web.uploads import png_bytes


class Busy(Exception):
    """The queue is full."""


class Cancelled(Exception):
    """The job was cancelled while it ran."""


@dataclass
class Job:
    task: Task
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = "queued"                   # queued, running, done, error, cancelled
    nfe: int = 0
    message: str = ""
    pngs: dict = field(default_factory=dict)  # name -> PNG bytes: result-0.., guide, mask (white = kept), t0map, grid
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    read: float | None = None                # when its status or an image was last asked for
    condition: dict | None = None            # an edit's class (sdekit.apps.web.tasks.condition), once it ran
    cancel: threading.Event = field(default_factory=threading.Event)

    def size(self) -> int:
        """Bytes of its result PNGs."""
        return sum(map(len, self.pngs.values()))

    def progress(self) -> float:
        """In [0, 1]: score evaluations done over those expected, capped at 0.99 until done."""
        if self.status == "done":
            return 1.0
        return min(0.99, self.nfe / max(1, self.task.expected_nfe()))


class JobQueue:
    """First come, first served, one job at a time; at most ``limits.waiting`` jobs wait (more: Busy);
    finished jobs are kept as the module's docstring says (``keep``, if given, replaces ``limits.keep_jobs``)."""

    def __init__(self, model, limits: Limits = Limits(), keep: int | None = None):
        self.model, self.limits = model, limits
        self.keep = max(limits.keep_jobs if keep is None else keep, 4 * (limits.waiting + 1))
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self.cond = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="sdekit-web-worker", daemon=True)
        self.worker.start()

    def submit(self, task: Task) -> Job:
        with self.cond:
            if self.closed:
                raise Busy("the server is stopping")
            if len(self.waiting) >= self.limits.waiting:
                raise Busy(f"busy: {len(self.waiting)} jobs are waiting; try again in a minute")
            job = Job(task)
            self.jobs[job.id] = job
            self.waiting.append(job)
            self.forget()
            self.cond.notify_all()
            return job

    def forget(self, now: float | None = None) -> list[str]:
        """Drop the finished jobs the retention rule (module docstring) lets go; returns their ids."""
        now = time.monotonic() if now is None else now
        with self.cond:
            done = [j for j in self.jobs.values() if j.finished is not None]          # oldest first
            total, gone = sum(j.size() for j in done), []
            for i, j in enumerate(done):
                newer = len(done) - i - 1
                last = max(j.finished, j.read or j.finished)
                if total > self.limits.keep_bytes or (newer >= self.keep and now - last > self.limits.keep_seconds):
                    total -= j.size()
                    gone.append(j.id)
                    del self.jobs[j.id]
            return gone

    def get(self, job_id: str) -> Job | None:
        """The job (its retention clock restarts: a client is reading it), or None."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is not None:
                job.read = time.monotonic()
            return job

    def position(self, job: Job) -> int:
        """1 = next to run; 0 = running or finished."""
        with self.cond:
            return next((i + 1 for i, j in enumerate(self.waiting) if j is job), 0)

    def ahead(self, job: Job) -> int:
        """The jobs that run or wait before a queued ``job`` (0: it starts next, nothing else runs)."""
        with self.cond:
            position = self.position(job)
            return 0 if position == 0 else position - 1 + (self.running is not None)

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancel.set()
            if job in self.waiting:
                self.waiting.remove(job)
                job.status, job.message = "cancelled", "cancelled"

    def close(self, seconds: float | None = None) -> bool:
        """Stop: cancel the waiting jobs and the running one, and wait up to ``seconds`` (default
        ``limits.stop_seconds``) for the worker to end (a running job stops at its next solver step).
        Returns whether it ended."""
        with self.cond:
            self.closed = True
            for job in self.waiting:
                job.cancel.set()
                job.status, job.message = "cancelled", "cancelled: the server stopped"
            self.waiting.clear()
            if self.running is not None:
                self.running.cancel.set()
            self.cond.notify_all()
        if self.worker is not threading.current_thread():
            self.worker.join(self.limits.stop_seconds if seconds is None else seconds)
        return not self.worker.is_alive()

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
                self.forget()

    def _run(self, job: Job) -> None:
        def on_step(nfe):
            job.nfe = nfe
            if job.cancel.is_set():
                raise Cancelled
        try:
            out = run_task(self.model, job.task, on_step)
            pngs = {f"result-{i}": png_bytes(u) for i, u in enumerate(out["results"])}
            from sdekit.data.datasets import grid
            pngs["grid"] = png_bytes(torch.from_numpy(grid(out["results"])).permute(2, 0, 1) / 255)
            if out["guide"] is not None:
                pngs["guide"] = png_bytes(out["guide"][0])
            if out["mask"] is not None:
                pngs["mask"] = png_bytes(out["mask"][0])
            if out.get("t0_map") is not None:
                pngs["t0map"] = png_bytes(out["t0_map"][0])
            job.pngs, job.condition, job.status = pngs, out.get("condition"), "done"
            k = len(out["results"])
            job.message = (f"{k} image{'s' if k != 1 else ''} in {time.monotonic() - job.started:.1f} s "
                           f"({job.nfe} score evaluations)")
            if job.condition is not None:
                job.message += f"; {job.condition['text']}"
        except Cancelled:
            job.status, job.message = "cancelled", "cancelled"
        except (UserError, ValueError) as e:
            job.status, job.message = "error", (str(e).strip().splitlines() or [type(e).__name__])[0]
        except Exception as e:                # keep serving whatever a run does
            job.status, job.message = "error", f"internal error: {type(e).__name__}: {e}".splitlines()[0]
            print(f"sdekit serve: job {job.id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            job.finished = time.monotonic()
