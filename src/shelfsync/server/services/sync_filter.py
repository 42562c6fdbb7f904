"""Selective sync: does a path belong to a device's selection?

Patterns use gitignore's glob syntax (via pathspec): `Music/**`, `*.pdf`,
`Photos/2024/`. An empty include list means everything; exclude wins.
"""

from __future__ import annotations

from functools import lru_cache

import pathspec

from shelfsync.server.domain.accounts import SyncFilter

__all__ = ["PathSelector", "selector_for"]


class PathSelector:
    def __init__(self, sync_filter: SyncFilter) -> None:
        self.everything = not sync_filter.include and not sync_filter.exclude
        self._include = (
            pathspec.GitIgnoreSpec.from_lines(sync_filter.include) if sync_filter.include else None
        )
        self._exclude = (
            pathspec.GitIgnoreSpec.from_lines(sync_filter.exclude) if sync_filter.exclude else None
        )

    def matches(self, path: str) -> bool:
        if self.everything:
            return True
        if self._include is not None and not self._include.match_file(path):
            return False
        return not (self._exclude is not None and self._exclude.match_file(path))


@lru_cache(maxsize=256)
def selector_for(sync_filter: SyncFilter) -> PathSelector:
    return PathSelector(sync_filter)
