"""What the user sees: Rich progress bars on a terminal, plain log lines otherwise.

Transfers report through one `Reporter`: a phase (`uploading 12 files, 80 MiB`)
advances by bytes, and big files get a bar of their own. Without a terminal
(cron, systemd, tests) every finished transfer is one log line, so output stays
greppable; `--quiet` keeps only warnings and errors. All three are safe to call
from the transfer threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = [
    "PlainReporter",
    "QuietReporter",
    "Reporter",
    "RichReporter",
    "Transfer",
    "format_bytes",
    "make_reporter",
]

# Files at least this big get a bar of their own on a terminal.
_OWN_BAR_BYTES = 8 * 1024 * 1024


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Transfer(Protocol):
    def advance(self, size_bytes: int) -> None: ...

    def done(self, *, note: str = "") -> None: ...


class Reporter(Protocol):
    def phase(self, *, verb: str, files: int, total_bytes: int) -> None: ...

    def end_phase(self) -> None: ...

    def transfer(self, *, verb: str, path: str, size_bytes: int) -> Transfer: ...

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def close(self) -> None: ...


class _NoTransfer:
    def advance(self, size_bytes: int) -> None:
        pass

    def done(self, *, note: str = "") -> None:
        pass


class QuietReporter:
    """Warnings only (to standard error)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()

    def phase(self, *, verb: str, files: int, total_bytes: int) -> None:
        pass

    def end_phase(self) -> None:
        pass

    def transfer(self, *, verb: str, path: str, size_bytes: int) -> Transfer:
        return _NoTransfer()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        with self._lock:
            print(f"warning: {message}", file=self._stream, flush=True)

    def close(self) -> None:
        pass


class _LoggedTransfer:
    def __init__(self, reporter: PlainReporter, verb: str, path: str, size_bytes: int) -> None:
        self._reporter, self._verb, self._path, self._size = reporter, verb, path, size_bytes
        self._started = time.monotonic()

    def advance(self, size_bytes: int) -> None:
        pass

    def done(self, *, note: str = "") -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = f", {format_bytes(self._size / elapsed)}/s" if self._size >= 1024 * 1024 else ""
        extra = f" ({note})" if note else ""
        self._reporter.info(
            f"{self._verb} {self._path} {format_bytes(self._size)} in {elapsed:.1f} s{rate}{extra}"
        )


class PlainReporter(QuietReporter):
    """One line per event, for logs."""

    def phase(self, *, verb: str, files: int, total_bytes: int) -> None:
        self.info(f"{verb} {files} file(s), {format_bytes(total_bytes)}")

    def transfer(self, *, verb: str, path: str, size_bytes: int) -> Transfer:
        return _LoggedTransfer(self, verb, path, size_bytes)

    def info(self, message: str) -> None:
        with self._lock:
            print(message, file=self._stream, flush=True)


class _BarTransfer:
    def __init__(self, reporter: RichReporter, task: TaskID | None, path: str) -> None:
        self._reporter, self._task, self._path = reporter, task, path

    def advance(self, size_bytes: int) -> None:
        self._reporter._advance(self._task, size_bytes)

    def done(self, *, note: str = "") -> None:
        self._reporter._finish(self._task)


class RichReporter:
    """Bars with bytes, rate and time left (Rich), on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._phase: TaskID | None = None
        self._lock = threading.Lock()
        self._started = False

    def phase(self, *, verb: str, files: int, total_bytes: int) -> None:
        with self._lock:
            if not self._started:
                self._progress.start()
                self._started = True
            self._phase = self._progress.add_task(f"{verb} {files} file(s)", total=total_bytes)

    def end_phase(self) -> None:
        with self._lock:
            if self._phase is not None:
                self._progress.remove_task(self._phase)
                self._phase = None

    def transfer(self, *, verb: str, path: str, size_bytes: int) -> Transfer:
        task = None
        if size_bytes >= _OWN_BAR_BYTES:
            with self._lock:
                name = path if len(path) <= 40 else "…" + path[-39:]
                task = self._progress.add_task(f"  {name}", total=size_bytes)
        return _BarTransfer(self, task, path)

    def _advance(self, task: TaskID | None, size_bytes: int) -> None:
        with self._lock:
            if task is not None:
                self._progress.advance(task, size_bytes)
            if self._phase is not None:
                self._progress.advance(self._phase, size_bytes)

    def _finish(self, task: TaskID | None) -> None:
        if task is not None:
            with self._lock:
                self._progress.remove_task(task)

    def info(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self._console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def close(self) -> None:
        with self._lock:
            if self._started:
                self._progress.stop()
                self._started = False


def make_reporter(*, quiet: bool, stream: TextIO | None = None) -> Reporter:
    """Quiet, Rich on a terminal, plain lines otherwise."""
    out = stream or sys.stderr
    if quiet:
        return QuietReporter(out)
    if out.isatty():
        return RichReporter(Console(file=out))
    return PlainReporter(out)
