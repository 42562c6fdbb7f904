"""ignore.py: the built-in rules' fast matcher agrees with pathspec's gitignore semantics."""

from __future__ import annotations

import itertools

import pathspec
import pytest

from shelfsync.client.ignore import BUILTIN_PATTERNS, IgnoreRules

NAMES = [
    "a.txt", ".shelfsync", "x.swp", "x.swpx", "notes~", "~notes", ".#lock", "a.#b",
    ".~lock.doc#", ".~lock.doc", "~$report.docx", "x~$y", "f.crdownload", "v.part",
    "v.partial", "v.party", ".DS_Store", "ds_store", "Thumbs.db", "thumbs.db",
    "desktop.ini", "x.shelfsync-part", "", "é.txt", "a\\nb",
]  # fmt: skip


def paths() -> list[str]:
    found = list(NAMES)
    for a, b in itertools.product(NAMES, repeat=2):
        if a and b:
            found.append(f"{a}/{b}")
            found.append(f"dir/{a}/{b}")
    return found


@pytest.mark.parametrize("directory", [False, True], ids=["file", "dir"])
def test_builtin_matcher_agrees_with_pathspec(directory: bool) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(BUILTIN_PATTERNS)
    rules = IgnoreRules()
    for path in paths():
        if not path:
            continue
        probe = path + "/" if directory else path
        assert rules.ignores_file(probe) == spec.match_file(probe), probe


def test_user_rules_still_apply_and_can_be_empty() -> None:
    rules = IgnoreRules(["*.log", "!keep.log", "# comment", ""])
    assert rules.ignores_file("a/b.log")
    assert not rules.ignores_file("keep.log")
    assert not rules.ignores_file("a.txt")
    assert not IgnoreRules(["# only a comment"]).ignores_file("a.log")
