"""The LISTEN/NOTIFY channel between server processes (storage/change_channel.py).

Two channels on one database are two processes: a signal published by one
reaches the other (and not the sender itself), and a listener whose
connection is killed reconnects, reports the gap, and delivers again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import psycopg
import pytest

from shelfsync.server.storage.change_channel import ChangeChannel
from shelfsync.server.storage.engine import Database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

DELIVERY_S = 2.0


class Process:
    """One channel, recording what it is told."""

    def __init__(self, db: Database) -> None:
        self.changes: queue.Queue[str] = queue.Queue()
        self.gaps = threading.Semaphore(0)
        channel = ChangeChannel.for_database(
            db, on_change=self.changes.put, on_gap=self.gaps.release
        )
        assert channel is not None
        self.channel = channel

    def next_change(self) -> str:
        return self.changes.get(timeout=DELIVERY_S)


@pytest.fixture
def two_processes(db: Database) -> Iterator[tuple[Process, Process]]:
    a, b = Process(db), Process(db)
    for p in (a, b):
        p.channel.start()
        assert p.channel.wait_connected(10)
        assert p.gaps.acquire(timeout=5)  # the first connection counts as one
    yield a, b
    for p in (a, b):
        p.channel.stop()


def test_a_signal_reaches_the_other_process_and_not_the_sender(
    two_processes: tuple[Process, Process],
) -> None:
    a, b = two_processes
    a.channel.publish("user-1")
    assert b.next_change() == "user-1"
    b.channel.publish("user-2")
    assert a.next_change() == "user-2"
    with pytest.raises(queue.Empty):
        a.changes.get(timeout=0.3)  # its own user-1 came back and was dropped
    assert b.changes.empty()


def test_a_killed_listener_reconnects_reports_the_gap_and_delivers_again(
    two_processes: tuple[Process, Process], database_url: str
) -> None:
    a, b = two_processes
    with psycopg.connect(database_url) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'shelfsync-listener-%%' "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    assert len(killed) == 2
    for p in (a, b):
        assert p.gaps.acquire(timeout=10), "no reconnection reported"
        assert p.channel.wait_connected(10)
    a.channel.publish("user-3")
    assert b.next_change() == "user-3"
