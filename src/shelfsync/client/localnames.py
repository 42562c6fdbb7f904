"""Where a library path lives on this disk.

Usually the on-disk name is the library path. Two exceptions:
- a directory that already exists under another Unicode spelling (NFD, as
  macOS writes) is reused, so a new file joins it instead of creating a twin;
- on a case-insensitive file system two library paths that differ only in case
  would be one file: the second is kept under a suffixed name
  (`Song (case 2).mp3`), with a warning, and the synced tree remembers the
  alias so local edits still go to the right library path.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["LocalNamer", "is_case_insensitive"]


def is_case_insensitive(directory: Path) -> bool:
    """Probe the file system holding `directory` (creates and removes one file)."""
    probe = directory / f"CaseProbe-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    try:
        return os.path.exists(directory / probe.name.lower())
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


class LocalNamer:
    def __init__(
        self,
        *,
        case_insensitive: bool,
        dirs: Mapping[str, str],
        taken: Iterable[str],
    ) -> None:
        """`dirs`: library directory -> on-disk directory; `taken`: on-disk names in use."""
        self._ci = case_insensitive
        self._dirs = {self._key(lib): local for lib, local in dirs.items()}
        self._taken = {self._key(name) for name in taken}

    def _key(self, name: str) -> str:
        return name.casefold() if self._ci else name

    def name_for(self, path: str) -> tuple[str, str | None]:
        """(on-disk relative name, warning or None) for a library path, and claim it."""
        *parents, name = path.split("/")
        local_parent = ""
        lib_prefix = ""
        for segment in parents:
            lib_prefix = f"{lib_prefix}/{segment}" if lib_prefix else segment
            known = self._dirs.get(self._key(lib_prefix))
            if known is None:
                known = f"{local_parent}/{segment}" if local_parent else segment
                self._dirs[self._key(lib_prefix)] = known
            local_parent = known
        candidate = f"{local_parent}/{name}" if local_parent else name
        warning = None
        if self._ci and self._key(candidate) in self._taken:
            stem, dot, ext = name.rpartition(".")
            if not stem:  # no extension (or a dotfile): the suffix goes at the end
                stem, dot, ext = name, "", ""
            counter = 2
            while True:
                alt = f"{stem} (case {counter}){dot}{ext}"
                candidate = f"{local_parent}/{alt}" if local_parent else alt
                if self._key(candidate) not in self._taken:
                    break
                counter += 1
            warning = (
                f"{path!r} differs only in case from another file, which this file system "
                f"cannot tell apart: kept here as {candidate!r}"
            )
        self._taken.add(self._key(candidate))
        return candidate, warning

    def release(self, local: str) -> None:
        self._taken.discard(self._key(local))
