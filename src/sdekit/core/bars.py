"""Progress bars: tqdm on stderr, drawn for a person at a terminal and kept short in a log file."""
from __future__ import annotations

import sys

__all__ = ["progress_bar", "LOG_INTERVAL"]

LOG_INTERVAL = 30.0    # seconds between redraws when stderr is not a terminal (a log file, a pipe)


def progress_bar(*args, **kwargs):
    """``tqdm(*args, **kwargs)`` (tqdm.auto), redrawn at most every :data:`LOG_INTERVAL` seconds when stderr
    is not a terminal, so that a log gets a line every half minute rather than one per step; a
    ``mininterval`` given by the caller wins."""
    from tqdm.auto import tqdm
    if not _is_terminal(sys.stderr):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(*args, **kwargs)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):       # replaced or closed streams
        return False
