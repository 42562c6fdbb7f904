"""What the client leaves alone: built-in names and `.shelfsyncignore` (gitignore syntax).

The built-ins cover the client's own files (`.shelfsync/`, partial downloads)
and the temporary files editors and browsers write beside real ones; syncing
those would only ship half-written bytes around. The user's rules come from
`FOLDER/.shelfsyncignore`, read with pathspec's gitignore semantics (so `!`
negation, `dir/`, `**` behave as in git). The ignore file itself is synced.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


# The built-ins, matched without pathspec (it costs ~50 us a path; a scan asks
# for every file, twice): the state folder at the top, and name patterns that,
# having no slash, match any component of the path (gitignore semantics; the
# equivalence is tested against pathspec in tests/client/test_ignore.py).
_STATE_PREFIX = ".shelfsync/"
_BUILTIN_NAME = re.compile("|".join(fnmatch.translate(p) for p in BUILTIN_PATTERNS if "/" not in p))


class IgnoreRules:
    def __init__(self, user_lines: list[str] | None = None) -> None:
        self._user: pathspec.GitIgnoreSpec | None = None
        if user_lines:
            # Imported only for a folder with rules: `import pathspec` is about
            # 50 ms of CPU, paid at every start of `shelfsync sync` otherwise.
            import pathspec

            self._user = pathspec.GitIgnoreSpec.from_lines(user_lines)
        self._has_user = self._user is not None and any(
            p.include is not None for p in self._user.patterns
        )

    @classmethod
    def for_folder(cls, folder: Path) -> IgnoreRules:
        try:
            text = (folder / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            return cls()
        return cls(text.splitlines())

    def ignores_file(self, path: str) -> bool:
        """`path`: a `/`-separated path relative to the folder."""
        if path.startswith(_STATE_PREFIX) or any(
            _BUILTIN_NAME.match(part) for part in path.split("/")
        ):
            return True
        return self._has_user and self._user is not None and self._user.match_file(path)

    def ignores_dir(self, path: str) -> bool:
        # A trailing slash lets `dir/` patterns match the directory itself.
        return self.ignores_file(path + "/")
