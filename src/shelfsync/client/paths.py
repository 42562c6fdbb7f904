"""Library paths on this side (protocol section 3) and their safe place on disk.

The server validates paths, but a client writes them to disk: every remote path
is validated again here, and every file-system path the client touches is built
by `resolve_inside`, which refuses to step through a symlink or leave the folder
whatever the path says.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

from shelfsync.client.errors import UnsafePath

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "library_path",
    "parent_of",
    "resolve_inside",
    "validate_library_path",
]

MAX_PATH_BYTES = 4096
MAX_SEGMENT_BYTES = 255


def validate_library_path(raw: str) -> str:
    """The NFC form of a valid library path, else UnsafePath (the server's rules)."""
    if not raw:
        raise UnsafePath("empty path")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafePath(f"{raw!r}: not valid UTF-8") from exc
    path = unicodedata.normalize("NFC", raw)
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafePath(f"{path!r}: longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/") or path.endswith("/"):
        raise UnsafePath(f"{path!r}: leading or trailing '/'")
    if "\\" in path:
        raise UnsafePath(f"{path!r}: backslash")
    for ch in path:
        code = ord(ch)
        # C0, DEL and C1 controls, as the server refuses them.
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
            raise UnsafePath(f"{path!r}: control character")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafePath(f"{path!r}: empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafePath(f"{path!r}: a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return path


def library_path(local_rel: str) -> str | None:
    """The library path of an on-disk relative path, or None when it cannot be one."""
    try:
        return validate_library_path(local_rel)
    except UnsafePath:
        return None


def parent_of(path: str) -> str:
    """The parent of a `/`-separated path ('' for a top-level name)."""
    return path.rpartition("/")[0]


def resolve_inside(root: Path, local_rel: str) -> Path:
    """`root/local_rel`, refusing traversal, absolute parts and symlinked parents.

    `root` must be an absolute, resolved directory. Existing parents are checked
    with lstat (a symlink, even one pointing inside, is refused: it would make
    the file land somewhere else than its path says), and the final path must
    still be inside `root` after resolving.
    """
    parts = local_rel.split("/")
    if not local_rel or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise UnsafePath(f"{local_rel!r}: not a relative path inside the folder")
    if os.sep != "/" and any(os.sep in p for p in parts):
        raise UnsafePath(f"{local_rel!r}: contains the platform separator")
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break  # the rest will be created as plain directories
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{local_rel!r}: a parent is a symlink or not a directory")
    target = root.joinpath(*parts)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{local_rel!r}: is a symlink; the client never writes through one")
    resolved_parent = target.parent.resolve()
    if resolved_parent != root and root not in resolved_parent.parents:
        raise UnsafePath(f"{local_rel!r}: resolves outside the folder")
    return target
