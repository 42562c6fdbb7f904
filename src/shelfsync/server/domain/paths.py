"""Library paths (protocol section 3): validation, NFC, and conflict names.

A library path is a key, never a file-system path: nothing here (or anywhere
in the server) joins it onto a directory, so traversal is impossible by
construction. The rules still refuse `..`, NUL and control characters, because
clients do write these paths to disk.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from shelfsync.server.domain.errors import InvalidPath

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "conflict_path",
    "normalize_path",
    "split_name",
]

MAX_PATH_BYTES = 4096
MAX_SEGMENT_BYTES = 255
# C0, DEL and C1 controls: never valid in a file name we hand to devices. (One
# regex search, not a loop over characters: a report batch checks 1,000 paths.)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def normalize_path(raw: str) -> str:
    """The canonical (NFC) form of a valid library path, else InvalidPath."""
    if not isinstance(raw, str) or not raw:
        raise InvalidPath("path must be a non-empty string")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPath("path must be valid UTF-8 (no lone surrogates)") from exc
    path = unicodedata.normalize("NFC", raw)
    size = len(path.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        raise InvalidPath(f"path is {size} bytes, more than {MAX_PATH_BYTES}")
    if path.startswith("/") or path.endswith("/"):
        raise InvalidPath("path must be relative, without a leading or trailing '/'")
    if "\\" in path:
        raise InvalidPath("path must not contain a backslash")
    if _CONTROL.search(path):
        raise InvalidPath("path must not contain NUL or other control characters")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath("path segments must not be empty, '.' or '..'")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return path


def split_name(path: str) -> tuple[str, str, str]:
    """(parent with trailing '/', stem, extension) of the last segment.

    A leading dot is part of the stem (`.bashrc` has no extension) and only the
    last suffix counts (`a.tar.gz` -> `a.tar`, `.gz`).
    """
    parent, _, name = path.rpartition("/")
    parent = parent + "/" if parent else ""
    dot = name.rfind(".")
    if dot <= 0:
        return parent, name, ""
    return parent, name[:dot], name[dot:]


def _fit(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` within `max_bytes` UTF-8 bytes (whole characters)."""
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", "ignore")


def conflict_path(path: str, *, device_name: str, when: datetime, attempt: int = 1) -> str:
    """`<stem> (conflict <device name> <YYYY-MM-DD HHMMSS>)<ext>` (protocol section 8).

    `attempt` > 1 adds a counter, for when that name is itself taken.
    """
    parent, stem, ext = split_name(path)
    stamp = when.strftime("%Y-%m-%d %H%M%S")
    if attempt > 1:
        stamp += f" {attempt}"

    def size(stem: str, device: str, ext: str) -> int:
        return len(f"{stem} (conflict {device} {stamp}){ext}".encode())

    # Keep the new segment within the segment limit: trim the stem first (to one
    # character at least), then the extension, then the device name; the stamp
    # and counter always stay, so attempts give distinct names.
    stem = _fit(stem, len(stem.encode()) - (size(stem, device_name, ext) - MAX_SEGMENT_BYTES))
    stem = stem or path.rpartition("/")[2][:1]
    ext = _fit(ext, len(ext.encode()) - (size(stem, device_name, ext) - MAX_SEGMENT_BYTES))
    device_name = _fit(
        device_name, len(device_name.encode()) - (size(stem, device_name, ext) - MAX_SEGMENT_BYTES)
    ).rstrip()
    return normalize_path(f"{parent}{stem} (conflict {device_name} {stamp}){ext}")
