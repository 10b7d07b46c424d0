"""What the page's server accepts: one request's size, a job's parameters, and the server's capacity."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Bounds on requests and on the server's work. A request beyond them gets a 4xx answer whose one-line
    message names the limit; beyond the connection limit uvicorn answers 503.

    Sizes are in bytes, durations in seconds."""
    upload_bytes: int = 4 * 1024 * 1024      # an uploaded image file, or the JSON body of a job
    pixels: int = 4096 * 4096                # decoded image size (refuses decompression bombs)
    steps: int = 2000
    results: int = 16                        # images per SDEdit / inpainting job
    samples: int = 64                        # images per sampling job
    repeats: int = 10
    waiting: int = 8                         # jobs waiting behind the running one
    decodes: int = 2                         # image decodes at once (~150 MB each at the pixel limit)
    connections: int = 64                    # open connections; more are answered 503 by uvicorn
    head_seconds: float = 10.0               # to send a request's line and headers, once connected
    body_seconds: float = 30.0               # to send a request's body, once its headers are in
