"""What someone watching a conversion sees on stderr: a status line on a terminal, plain lines in a log.

``Display.update`` is what the CLI passes as ``on_progress`` (``options.Progress``: the phase, bytes
fetched and written); ``note`` prints a line of its own (a retry and its wait, "resuming: ...").

On a terminal one status line is redrawn in place from the first request on, at most ten times a
second, cut to the terminal's width (a line that wraps cannot be redrawn with a carriage return);
notes are printed above it, and it ends on its own line at 100%. Anywhere else (a log file, a pipe,
a scheduler) there are no carriage returns or escapes: nothing for a short run, a plain line every
``interval`` seconds for a long one, and the last line when it ends. Bytes are decimal (kB, MB, GB)
here and in the result line: one unit system.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import threading
import time
from typing import Callable, TextIO

from .options import Progress

_LABELS = {"resolving": "resolving", "headers": "reading config, tokenizer and headers",
           "vocabulary": "building the vocabulary",
           "tensors": "tensors", "done": "done"}


class Display:
    """Progress and notes on ``stream`` (stderr): redrawn in place on a terminal, plain lines elsewhere."""

    #: seconds between two redraws of the status line on a terminal
    REDRAW = 0.1
    #: seconds of speed history (the speed shown is the average over this window)
    WINDOW = 5.0

    def __init__(self, stream: TextIO | None = None, *, terminal: bool | None = None, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None):
        self._stream = stream or sys.stderr
        self._terminal = _is_terminal(self._stream) if terminal is None else terminal
        #: plain mode: seconds between two lines (the first one after as long)
        self._interval = interval
        self._clock = clock
        self._width = width
        self._lock = threading.RLock()
        self._progress: Progress | None = None
        self._phase = ""
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._drawn = ""  # the status line on screen (terminal), "" when none
        self._last_draw = -1e9
        self._started = clock()
        self._last_plain = self._started
        self._printed_plain = False
        self._closed = False
        self._told_resume = False
        encoding = (getattr(self._stream, "encoding", None) or "").lower().replace("-", "")
        self._fill = "█" if encoding == "utf8" else "#"

    # -- what the conversion calls -------------------------------------------------

    def update(self, p: Progress) -> None:
        """``on_progress``: take the new counters; redraw (or print) when it is time."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self._progress = p
            self._samples.append((now, p.bytes_fetched))
            while len(self._samples) > 2 and self._samples[0][0] < now - self.WINDOW:
                self._samples.popleft()
            changed = p.phase != self._phase
            self._phase = p.phase
            if p.units_resumed and not self._told_resume:
                self._told_resume = True
                self.note(f"resuming: {p.units_resumed} of {p.units_total} units already done")
            if self._terminal:
                if changed or now - self._last_draw >= self.REDRAW:
                    self._draw(self.line(now))
                    self._last_draw = now
                if p.phase == "done":
                    self._end_line()
            elif now - self._last_plain >= self._interval or (p.phase == "done" and self._printed_plain):
                self._write(f"hfstream: {self.line(now, bar=False)}\n")
                self._last_plain = now
                self._printed_plain = True

    def note(self, message: str) -> None:
        """A line of its own, above the status line (which is drawn again under it)."""
        with self._lock:
            if self._terminal and self._drawn:
                self._write("\r\x1b[K" + f"hfstream: {message}\n" + self._drawn)
            else:
                self._write(f"hfstream: {message}\n")

    def close(self) -> None:
        """The run is over (done, failed or interrupted): the status line stays as it was last drawn."""
        with self._lock:
            self._end_line()
            self._closed = True

    # -- the status line ---------------------------------------------------------

    def line(self, now: float | None = None, *, bar: bool = True) -> str:
        """The status line for the latest counters: phase, bar, bytes written and fetched, speed, ETA."""
        p = self._progress
        if p is None:
            return ""
        now = self._clock() if now is None else now
        label = _LABELS.get(p.phase, p.phase)
        if p.phase == "resolving":
            return f"{label} {p.source}"
        parts = []
        if p.total_bytes:
            written = min(p.bytes_written, p.total_bytes)
            # floor: 100% only once every byte is in
            parts.append(f"{written * 100 // p.total_bytes:3d}%")
            parts.append(f"{size(written, p.total_bytes)}/{size(p.total_bytes)} written")
        parts.append(f"{size(p.bytes_fetched)} fetched")
        if p.phase == "done":
            elapsed = now - p.started
            if elapsed > 0 and p.bytes_fetched:
                parts.append(f"{size(p.bytes_fetched / elapsed)}/s")
            parts.append(f"in {duration(elapsed)}")
        else:
            speed = self._speed()
            if speed:
                parts.append(f"{size(speed)}/s")
                left = p.bytes_to_fetch - p.bytes_fetched
                if p.phase in ("vocabulary", "tensors") and left > 0:
                    parts.append(f"ETA {duration(left / speed)}")
        text = ", ".join(parts[1:]) if p.total_bytes else ", ".join(parts)
        head = f"{label} {parts[0]}" if p.total_bytes else label
        if not (bar and p.total_bytes):
            return f"{head}: {text}"
        room = self._columns() - len(head) - len(text) - 5
        if room < 10:
            return f"{head} {text}"
        cells = min(room, 30)
        filled = cells * min(p.bytes_written, p.total_bytes) // p.total_bytes
        return f"{head} |{self._fill * filled}{' ' * (cells - filled)}| {text}"

    def _speed(self) -> float:
        """Bytes fetched per second over the last ``WINDOW`` seconds (0 until there are two samples)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def _columns(self) -> int:
        if self._width:
            return self._width
        try:  # the stream's own terminal: stdout may be a file while stderr is the screen
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        # 0 from a terminal whose size is not set yet (a pane just made)
        return columns if columns > 0 else shutil.get_terminal_size((80, 24)).columns

    def _draw(self, line: str) -> None:
        line = line[:max(1, self._columns() - 1)]
        self._write("\r" + line + "\x1b[K")
        self._drawn = line

    def _end_line(self) -> None:
        if self._terminal and self._drawn:
            self._write("\n")
            self._drawn = ""

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: nothing more to show
            pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_PREFIXES = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def size(n: float, scale_of: float | None = None) -> str:
    """``n`` bytes in decimal units; ``scale_of``: take the unit of that number (``31.2/50.3 MB``)."""
    ref = n if scale_of is None else scale_of
    for factor, unit in _PREFIXES:
        if ref >= factor:
            return f"{n / factor:.1f}" + ("" if scale_of is not None else f" {unit}")
    return f"{n:.0f}" + ("" if scale_of is not None else " B")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
