"""`shelfsync sync --watch`: stay running, react to both sides within seconds.

Two listeners wake one loop that runs full passes (a pass costs a directory
walk, so a pass per burst of events is cheap and never misses a change):
- local file events (watchfiles, debounced) for anything but ignored names;
- remote changes through the long-poll feed (`GET /changes?wait=`), which
  answers within a second of a commit anywhere in the library.
A periodic pass also runs as a safety net (a lost event, a server restart).
The long poll has an HTTP client of its own, owned by its daemon thread, so
stopping never waits for a poll in flight. While the server is unreachable,
retries back off up to a minute.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from shelfsync.client.errors import ClientError, Unauthorized
from shelfsync.client.http import ApiClient
from shelfsync.client.ignore import IGNORE_FILE, IgnoreRules
from shelfsync.client.progress import Reporter
from shelfsync.client.state import STATE_DIR, State
from shelfsync.client.sync import PassSummary

__all__ = ["LONG_POLL_WAIT_S", "Watcher"]

LONG_POLL_WAIT_S = 25.0
_SAFETY_PASS_S = 300.0
# Let a burst of events (a copy of many files, an editor's save dance) settle.
_DEBOUNCE_MS = 400
_FIRST_RETRY_S = 2.0
_MAX_RETRY_S = 60.0


class Watcher:
    def __init__(
        self,
        *,
        root: Path,
        poll_api: Callable[[], ApiClient],
        state: State,
        reporter: Reporter,
        run_pass: Callable[[], PassSummary],
        on_summary: Callable[[PassSummary], None],
    ) -> None:
        self._root = root.resolve()
        self._prefix = str(self._root) + os.sep
        self._poll_api = poll_api
        self._state = state
        self._reporter = reporter
        self._run_pass = run_pass
        self._on_summary = on_summary
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._pass_done = threading.Event()
        self._rules = IgnoreRules.for_folder(self._root)
        self._rules_stamp = self._ignore_stamp()

    def _ignore_stamp(self) -> int | None:
        try:
            return (self._root / IGNORE_FILE).stat().st_mtime_ns
        except OSError:
            return None

    def _wanted(self, _change: watchfiles.Change, path: str) -> bool:
        # Called once per file event, on a thread sharing the GIL with the pass:
        # a download pass writing 10,000 files made 10,000 events, and a realpath
        # plus a stat of the ignore file each cost as much CPU as the downloads.
        # watchfiles reports paths under the folder as it was given (resolved).
        if not path.startswith(self._prefix):
            return False
        rel = path[len(self._prefix) :]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        if rel == STATE_DIR or rel.startswith(STATE_DIR + "/"):
            return False
        if rel == IGNORE_FILE:  # the user edited .shelfsyncignore: new rules from now on
            stamp = self._ignore_stamp()
            if stamp != self._rules_stamp:
                self._rules, self._rules_stamp = IgnoreRules.for_folder(self._root), stamp
            return True
        return not self._rules.ignores_file(rel)

    def _watch_files(self) -> None:
        for _changes in watchfiles.watch(
            self._root,
            watch_filter=self._wanted,
            debounce=_DEBOUNCE_MS,
            step=50,
            stop_event=self.stop,
            raise_interrupt=False,
            yield_on_timeout=False,
        ):
            self._wake.set()

    def _long_poll(self) -> None:
        with self._poll_api() as api:
            self._poll_with(api)

    def _poll_with(self, api: ApiClient) -> None:
        delay_s = _FIRST_RETRY_S
        while not self.stop.is_set():
            try:
                page = api.changes(cursor=self._state.cursor, limit=1, wait_s=LONG_POLL_WAIT_S)
            except Unauthorized as exc:
                self._reporter.warn(f"the server refused this device: {exc}")
                self.stop.set()
                self._wake.set()
                return
            except ClientError as exc:
                if self.stop.is_set():
                    return
                self._reporter.warn(f"waiting for remote changes failed ({exc}); retrying")
                self.stop.wait(delay_s)
                delay_s = min(delay_s * 2, _MAX_RETRY_S)
                continue
            delay_s = _FIRST_RETRY_S
            if page.changes and not self.stop.is_set():
                # Wake the loop, and wait for its pass so we poll from the new cursor.
                self._pass_done.clear()
                self._wake.set()
                self._pass_done.wait(timeout=LONG_POLL_WAIT_S)

    def request_stop(self) -> None:
        """Stop after the pass in progress (signal handlers call this)."""
        self.stop.set()
        self._wake.set()

    def run(self) -> int:
        """Until `stop` is set; the exit status (0, or 1 after a fatal error)."""
        threads = [
            threading.Thread(target=self._watch_files, name="shelfsync-watch", daemon=True),
            threading.Thread(target=self._long_poll, name="shelfsync-poll", daemon=True),
        ]
        for thread in threads:
            thread.start()
        self._reporter.info(f"watching {self._root} (Ctrl-C to stop)")
        status = 0
        delay_s = _FIRST_RETRY_S
        next_safety = time.monotonic() + _SAFETY_PASS_S
        self._wake.set()  # a first pass at once
        while not self.stop.is_set():
            self._wake.wait(timeout=max(next_safety - time.monotonic(), 0.1))
            if self.stop.is_set():
                break
            self._wake.clear()
            try:
                summary = self._run_pass()
            except Unauthorized as exc:
                self._reporter.warn(f"the server refused this device: {exc}")
                status = 1
                break
            except ClientError as exc:
                self._reporter.warn(f"sync failed ({exc}); retrying in {delay_s:.0f} s")
                self.stop.wait(delay_s)
                delay_s = min(delay_s * 2, _MAX_RETRY_S)
                self._wake.set()
                continue
            finally:
                self._pass_done.set()
            delay_s = _FIRST_RETRY_S
            self._on_summary(summary)
            next_safety = time.monotonic() + _SAFETY_PASS_S
        self.stop.set()
        # The file watcher sees `stop` within its step; the long poll may hang
        # in a request for a while: a daemon thread, it is not waited for.
        threads[0].join(timeout=5)
        return status
