"""The page's job queue: one worker thread runs tasks in order (the CPU is the bottleneck), a bounded wait
list answers "busy" beyond it, and finished jobs keep their PNGs for a while so clients can fetch them."""
from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .limits import Limits
from .tasks import Task, run_task
from .uploads import png_bytes


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
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> float:
        """In [0, 1]: score evaluations done over those expected, capped at 0.99 until done."""
        if self.status == "done":
            return 1.0
        return min(0.99, self.nfe / max(1, self.task.expected_nfe()))


class JobQueue:
    """First come, first served, one job at a time; at most ``limits.waiting`` jobs wait (more: Busy);
    the ``keep`` most recent jobs are remembered."""

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
            if out.get("t0_map") is not None:
                pngs["t0map"] = png_bytes(out["t0_map"][0])
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
