"""The JWT signing secret: a file in the data directory, readable only by its owner."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_secret"]

_SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret, creating it (mode 0600, fsynced) on first start.

    Two processes starting at once (several `serve`s, or `--workers`) agree on
    one secret: each writes a whole candidate under a name of its own, and
    `link` (which never replaces) publishes the first; a reader never sees the
    file before its contents.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _read(path)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, secrets.token_hex(_SECRET_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(candidate, path)
        except FileExistsError:
            return _read(path)
    finally:
        candidate.unlink(missing_ok=True)
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
