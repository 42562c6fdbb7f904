"""The JWT signing secret: a file in the data directory, readable only by its owner."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_secret"]

_SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret, creating it (mode 0600, fsynced) on first start.

    Creation uses O_EXCL so two processes starting at once agree on one secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    try:
        os.write(fd, secrets.token_hex(_SECRET_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read(path)


def _read(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        # Never serve with a secret other users can read: tighten it.
        os.chmod(path, 0o600)
    value = path.read_text().strip()
    if len(value) < 2 * _SECRET_BYTES:
        raise RuntimeError(f"signing secret {path} is shorter than {_SECRET_BYTES} bytes")
    return bytes.fromhex(value) if _is_hex(value) else value.encode()


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
