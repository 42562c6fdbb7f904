"""Change signals between server processes: PostgreSQL LISTEN/NOTIFY, no broker.

Each server process keeps one connection of its own (outside the pool) that
LISTENs on one channel and also sends this process's signals. A writer thread
never waits for it: `publish(user_id)` only queues the id (coalesced: a burst
of commits to one library is one signal) and wakes the channel's thread, which
sends `pg_notify` and hands every signal from another process to `on_change`.
A process's own signals come back too; they are recognised by the sender's
backend pid and dropped, since its readers were woken locally already.

A signal is sent right after the commit that advanced the library's seq
(PostgreSQL delivers NOTIFY only at commit anyway), so a reader that subscribed
before reading the feed can never miss it while the connection is up. While it
is down (PostgreSQL restarting) signals are lost: the thread reconnects with
backoff and then calls `on_gap` so every local reader reads again, and the
feed's fallback poll bounds any other loss to seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from shelfsync.server.storage.engine import Database

__all__ = ["CHANNEL", "ChangeChannel"]

log = logging.getLogger("shelfsync.change_channel")

CHANNEL = "shelfsync_changes"
# Reconnect delays after a failure: from the first to the cap, doubling.
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
# A quiet connection is probed this often, so a dead peer is noticed even when
# no packet arrives to say so (a network path, not a local socket, can do that).
_PROBE_IDLE_S = 30.0
# The send coalesces per user; this bounds one statement's array.
_SEND_BATCH = 1000


class ChangeChannel:
    """One LISTEN connection and its thread, for one server process."""

    def __init__(
        self,
        conninfo: dict[str, Any],
        *,
        on_change: Callable[[str], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._conninfo = conninfo
        self._on_change = on_change
        self._on_gap = on_gap
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        # A self-pipe: publish() and stop() wake the thread out of select().
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.received = 0
        self.reconnects = 0

    @classmethod
    def for_database(
        cls, db: Database, *, on_change: Callable[[str], None], on_gap: Callable[[], None]
    ) -> ChangeChannel | None:
        """The channel for a PostgreSQL database; None on SQLite (one process)."""
        if db.is_sqlite:
            return None
        engine = db.engine
        _args, params = engine.dialect.create_connect_args(engine.url)
        conninfo = {
            **params,
            "connect_timeout": 5,
            # Notice a peer that vanished without closing the socket.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": f"shelfsync-listener-{os.getpid()}",
        }
        return cls(conninfo, on_change=on_change, on_gap=on_gap)

    # -- the writer side (any thread) ---------------------------------------

    def publish(self, user_id: str) -> None:
        """Queue a signal for `user_id`'s library; never blocks on the database."""
        with self._lock:
            self._pending.add(user_id)
        self._wake()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._thread = threading.Thread(
                target=self._run, name="shelfsync-change-channel", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is None:
            return
        self._wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the change channel did not stop within %.1f s", timeout_s)
            return
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            os.close(fd)

    def _wake(self) -> None:
        if self._wake_w < 0:
            return  # not started, or stopped
        # A full pipe means a wake-up is pending anyway; a closed one, a stop.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    # -- the channel's thread -------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        failing = False
        while not self._stopping.is_set():
            try:
                conn = psycopg.connect(**self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                if not failing:
                    log.warning("change channel: cannot connect (%s); retrying", exc)
                failing = True
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                if failing or self.reconnects:
                    log.warning("change channel: listening again")
                backoff = _BACKOFF_FIRST_S
                failing = False
                self.reconnects += 1
                self._connected.set()
                # Signals sent while no connection listened are lost: every local
                # reader reads again (most find nothing and wait on).
                self._on_gap()
                self._serve(conn)
            except Exception as exc:
                if not self._stopping.is_set():
                    if isinstance(exc, psycopg.Error):
                        log.warning("change channel: connection lost (%s); reconnecting", exc)
                    else:
                        log.exception("change channel failed; reconnecting")
                    failing = True
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
            finally:
                self._connected.clear()
                conn.close()

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        own_pid = conn.info.backend_pid
        while not self._stopping.is_set():
            self._drain_wake_pipe()
            self._send(conn)
            # Signals read while sending wait in psycopg's backlog: deliver them
            # before sleeping on the socket.
            self._deliver(conn, own_pid)
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], _PROBE_IDLE_S)
            if not ready:
                conn.execute("SELECT 1")

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _send(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            batch, self._pending = self._pending, set()
        if not batch:
            return
        ids = sorted(batch)
        try:
            for start in range(0, len(ids), _SEND_BATCH):
                conn.execute(
                    "SELECT pg_notify(%s, u) FROM unnest(%s::text[]) AS u",
                    (CHANNEL, ids[start : start + _SEND_BATCH]),
                )
        except psycopg.Error:
            # Sent again once reconnected (a signal late is only a spare read).
            with self._lock:
                self._pending |= batch
            raise
        self.sent += len(ids)

    def _deliver(self, conn: psycopg.Connection[Any], own_pid: int) -> None:
        for notify in conn.notifies(timeout=0):
            if notify.pid == own_pid or not notify.payload:
                continue
            self.received += 1
            try:
                self._on_change(notify.payload)
            except Exception:
                log.exception("change channel: waking readers failed")
