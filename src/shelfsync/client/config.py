"""This machine's device configuration: server URL, device id and device token only.

The password and the user's access/refresh tokens are never written down: the
device token alone lets an unattended client mint access tokens (protocol
section 2, `POST /auth/device`). The file is created with mode 0600 and written
atomically (temporary file, fsync, rename), so a crash never leaves half a token.
`SHELFSYNC_CONFIG_DIR` moves it, so several devices can live on one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from shelfsync.client.errors import ConfigError, NotLoggedIn

__all__ = [
    "CONFIG_FILE",
    "DeviceConfig",
    "config_dir",
    "delete_config",
    "load_config",
    "save_config",
]

CONFIG_FILE = "device.json"


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    server_url: str
    device_id: str
    device_token: str
    device_name: str
    # The folder `shelfsync sync` uses when none is given (the last one synced).
    folder: str | None = None


def config_dir() -> Path:
    """`$SHELFSYNC_CONFIG_DIR`, else `$XDG_CONFIG_HOME/shelfsync`, else ~/.config/shelfsync."""
    override = os.environ.get("SHELFSYNC_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "shelfsync"


def load_config(directory: Path | None = None) -> DeviceConfig:
    path = (directory or config_dir()) / CONFIG_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotLoggedIn(f"not logged in (no {path}): run `shelfsync login URL`") from exc
    try:
        data = json.loads(raw)
        return DeviceConfig(
            server_url=str(data["server_url"]),
            device_id=str(data["device_id"]),
            device_token=str(data["device_token"]),
            device_name=str(data.get("device_name", "")),
            folder=data.get("folder"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged: run `shelfsync login` again") from exc


def save_config(config: DeviceConfig, directory: Path | None = None) -> Path:
    target_dir = directory or config_dir()
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = target_dir / CONFIG_FILE
    temp = target_dir / f".{CONFIG_FILE}.{os.getpid()}.tmp"
    # O_EXCL + 0600 from the first byte: the token is never readable by others.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(config), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return target


def delete_config(directory: Path | None = None) -> bool:
    try:
        ((directory or config_dir()) / CONFIG_FILE).unlink()
    except FileNotFoundError:
        return False
    return True
