"""Small helpers shared by the bench scripts (stdlib only; no shelfsync imports).

The JSON every bench script writes with `--json OUT` (collected by bench/run_all.py
into one results file and the table of docs/benchmarks.md):

    {
      "script": "e2e_sync",            # the script's name (bench/NAME.py)
      "schema": 1,
      "quick": false,                  # --quick results are never comparable with the goals
      "command": "bench/e2e_sync.py --runs 3",
      "started": "2026-11-30T10:00:00Z", "finished": "...",
      "host": {...},                   # host_info(): cpus, load average, versions
      "goals": [                       # one entry per measured goal or sub-measure
        {
          "goal": 1,                   # the issue's goal number, 1-7
          "label": "small files",      # optional: which sub-measure of the goal
          "anchor": "Syncthing 1.19 A->B: 9.82 s",   # human text, value included
          "shelfsync": "4.10 s",                      # human text
          "ratio": 0.42,               # the figure the goal is about (float or null)
          "target": "<= 0.5",          # how the ratio is judged: "<= X" or ">= X"
          "met": true,                 # ratio judged against target (null if unknown)
          "comparable": true,          # false for --quick or partial runs
          "command": "make bench"      # optional: how to reproduce this row
        }
      ],
      ...                              # anything else the script wants to keep (runs, raw)
    }
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "SHARED_BENCH",
    "free_port",
    "host_info",
    "judge",
    "now_iso",
    "write_json",
]

REPO = Path(__file__).resolve().parents[1]
# The anchor scripts live beside the repository (shared/bench/);
# SHELFSYNC_SHARED_BENCH overrides.
SHARED_BENCH = Path(os.environ.get("SHELFSYNC_SHARED_BENCH", REPO.parent / "shared" / "bench"))


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


# The dependencies whose versions move the figures (pyproject.toml gives only
# lower bounds, so a fresh .venv may hold newer ones than the last run's).
_PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "sqlalchemy",
    "psycopg",
    "uvicorn",
    "uvloop",
    "httptools",
    "granian",
    "httpx",
    "httpcore",
    "orjson",
    "watchfiles",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def host_info() -> dict[str, Any]:
    """What the machine was doing and running: enough to judge the noise later."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
        info["cpu_model"] = model.group(1) if model else None
    info["git_head"] = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    info["git_dirty"] = bool(dirty)
    info["packages"] = package_versions()
    return info


def judge(ratio: float | None, target: str) -> bool | None:
    """`target` is "<= X" or ">= X"."""
    if ratio is None:
        return None
    op, _, value = target.partition(" ")
    limit = float(value)
    return ratio <= limit if op == "<=" else ratio >= limit


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json_dumps(data))
    tmp.replace(path)


def json_dumps(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.exit("a helper module; run bench/run_all.py or one of the bench scripts")
