"""`shelfsync serve` as a real process on loopback, driven over HTTP, on both databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.e2e.harness import free_port

pytestmark = pytest.mark.e2e

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "correct horse battery"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _env() -> dict[str, str]:
    # Only the flags decide where data goes (the low test hashing cost stays).
    where = ("SHELFSYNC_DATA_DIR", "SHELFSYNC_DATABASE_URL", "SHELFSYNC_HOST", "SHELFSYNC_PORT")
    return {k: v for k, v in os.environ.items() if k not in where}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    target: list[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHELFSYNC, *args, *self.target],
            input=stdin,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy after {START_TIMEOUT_S}s:\n{server.log()}")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    target = ["--data-dir", str(tmp_path / "data")]
    pg_name = None
    if request.param == "postgresql":
        pg_name = create_pg_database()
        target += ["--database-url", f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"]
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [SHELFSYNC, "serve", "--host", "127.0.0.1", "--port", str(port), *target],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    server = Server(process, f"http://127.0.0.1:{port}", target, log_path)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if pg_name is not None:
            drop_pg_database(pg_name)


def test_served_api_walk_through_and_clean_shutdown(server: Server) -> None:
    added = server.cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr

    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        login = http.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        assert login.json()["token_type"] == "Bearer"
        user_auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

        created = http.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=user_auth)
        assert created.status_code == 200, created.text
        device_id, device_token = created.json()["device"]["id"], created.json()["token"]

        listed = http.get("/api/sync/devices", headers=user_auth)
        assert listed.status_code == 200, listed.text
        assert [d["id"] for d in listed.json()["devices"]] == [device_id]

        exchanged = http.post("/api/v1/auth/device", json={"device_token": device_token})
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.json()["device_id"] == device_id
        device_auth = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
        own = http.get(f"/api/v1/sync/devices/{device_id}", headers=device_auth)
        assert own.status_code == 200, own.text

        assert http.get("/readyz").status_code == 200

    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status
    # says how the process ended (systemd counts that as a clean stop).
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    log = server.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
