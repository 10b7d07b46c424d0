"""What the page's server accepts: one request's size, a job's parameters, and the server's capacity."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Bounds on requests and on the server's work. A request beyond them gets a 4xx answer whose one-line
    message names the limit; beyond the connection limit uvicorn answers 503.

    Sizes are in bytes, durations in seconds."""
    upload_bytes: int = 4 * 1024 * 1024      # an uploaded image file, or the JSON body of a job
    pixels: int = 4096 * 4096                # decoded image size (refuses decompression bombs) ...
    zoom: int = 64                           # ... and at most this many times the model's size a side
    steps: int = 2000
    results: int = 16                        # images per SDEdit / inpainting job
    samples: int = 64                        # images per sampling job
    repeats: int = 10
    waiting: int = 8                         # jobs waiting behind the running one
    decodes: int = 2                         # image decodes at once (~150 MB each at the pixel limit)
    connections: int = 64                    # open connections; more are answered 503 by uvicorn
    head_seconds: float = 10.0               # to send a request's line and headers, once connected
    body_seconds: float = 30.0               # to send a request's body, once its headers are in
    keep_seconds: float = 600.0              # a finished job is kept this long after it finished or was last read
    keep_jobs: int = 32                      # and beyond that while fewer than max(keep_jobs, 4 x (waiting + 1)) are newer
    keep_bytes: int = 256 * 1024 * 1024      # but never more result PNGs than this (the oldest go first)
    stop_seconds: float = 10.0               # on shutdown, the running job's time to stop before the process exits

    def max_pixels(self, shape) -> int:
        """The most pixels an upload for a model of ``shape`` (C, H, W) may have: ``pixels``, and no more
        than ``zoom`` times the model's height and width (the page's canvas is at most 384 px a side or
        the model's size; nothing larger adds anything the model sees)."""
        H, W = (int(s) for s in shape[-2:])
        return min(self.pixels, self.zoom * H * self.zoom * W)
