"""The signing secret when several server processes start at once on one data dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shelfsync.server.storage.secret_file import load_or_create_secret

_READ = (
    "import sys; from pathlib import Path; "
    "from shelfsync.server.storage.secret_file import load_or_create_secret; "
    "print(load_or_create_secret(Path(sys.argv[1])).hex())"
)


def test_processes_starting_at_once_agree_on_one_whole_secret(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    runs = [
        subprocess.Popen([sys.executable, "-c", _READ, str(path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    seen = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(seen) == 1
    assert bytes.fromhex(seen.pop().decode()) == load_or_create_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no candidate left
