"""What the client leaves alone: built-in names and `.shelfsyncignore` (gitignore syntax).

The built-ins cover the client's own files (`.shelfsync/`, partial downloads)
and the temporary files editors and browsers write beside real ones; syncing
those would only ship half-written bytes around. The user's rules come from
`FOLDER/.shelfsyncignore`, read with pathspec's gitignore semantics (so `!`
negation, `dir/`, `**` behave as in git). The ignore file itself is synced.
"""

from __future__ import annotations

from pathlib import Path

import pathspec

__all__ = ["BUILTIN_PATTERNS", "IGNORE_FILE", "PARTIAL_SUFFIX", "IgnoreRules"]

IGNORE_FILE = ".shelfsyncignore"
# Our downloads land in `.<hash>.shelfsync-part` beside their target first.
PARTIAL_SUFFIX = ".shelfsync-part"
BUILTIN_PATTERNS: tuple[str, ...] = (
    "/.shelfsync/",  # the client's state
    f"*{PARTIAL_SUFFIX}",  # our partial downloads
    "*.swp",  # vim swap files
    "*.swx",
    "*~",  # emacs/gedit backups
    ".#*",  # emacs lock files
    ".~lock.*#",  # LibreOffice locks
    "~$*",  # Microsoft Office owner files
    "*.crdownload",  # Chrome partial downloads
    "*.part",  # Firefox partial downloads
    "*.partial",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
)


class IgnoreRules:
    def __init__(self, user_lines: list[str] | None = None) -> None:
        self._builtin = pathspec.GitIgnoreSpec.from_lines(BUILTIN_PATTERNS)
        self._user = pathspec.GitIgnoreSpec.from_lines(user_lines or [])

    @classmethod
    def for_folder(cls, folder: Path) -> IgnoreRules:
        try:
            text = (folder / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            return cls()
        return cls(text.splitlines())

    def ignores_file(self, path: str) -> bool:
        """`path`: a `/`-separated path relative to the folder."""
        return self._builtin.match_file(path) or self._user.match_file(path)

    def ignores_dir(self, path: str) -> bool:
        # A trailing slash lets `dir/` patterns match the directory itself.
        return self.ignores_file(path + "/")
