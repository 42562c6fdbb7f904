"""Library paths (protocol section 3) and conflict names (section 8)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

import pytest

from shelfsync.server.domain.errors import InvalidPath
from shelfsync.server.domain.paths import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    conflict_path,
    normalize_path,
)

WHEN = datetime(2026, 11, 26, 18, 27, 41, 123000, tzinfo=UTC)


def test_nfc_and_nfd_spellings_are_one_key() -> None:
    nfc = "Musique/Café.flac"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert normalize_path(nfd) == normalize_path(nfc) == nfc


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("a", id="one-character"),
        pytest.param("books/Dune.epub", id="nested"),
        pytest.param("a b/ c .txt", id="spaces"),
        pytest.param(".hidden/..dots../x...", id="dots-inside-segments"),
        pytest.param("日本語/ファイル.txt", id="non-latin"),
        pytest.param("x" * MAX_SEGMENT_BYTES, id="segment-at-the-limit"),
        pytest.param("é" * 127 + "e", id="multibyte-segment-at-the-limit"),
        pytest.param("/".join(["x" * 200] * 20) + "/" + "y" * 76, id="path-at-the-limit"),
    ],
)
def test_valid_paths_are_kept(path: str) -> None:
    assert normalize_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("", id="empty"),
        pytest.param("/etc/passwd", id="leading-slash"),
        pytest.param("books/", id="trailing-slash"),
        pytest.param("a//b", id="empty-segment"),
        pytest.param("./a", id="dot-segment"),
        pytest.param("a/./b", id="inner-dot-segment"),
        pytest.param("..", id="dotdot-alone"),
        pytest.param("../secret", id="leading-dotdot"),
        pytest.param("a/../../b", id="inner-dotdot"),
        pytest.param("a/..", id="trailing-dotdot"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x1fb", id="c0-control"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a\x85b", id="c1-control"),
        pytest.param("a\ud800b", id="lone-surrogate"),
        pytest.param("x" * (MAX_SEGMENT_BYTES + 1), id="segment-too-long"),
        pytest.param("é" * 128, id="multibyte-segment-too-long"),
        pytest.param("/".join(["x" * 200] * 21), id="path-too-long"),
    ],
)
def test_invalid_paths_are_rejected(path: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(path)


def test_path_limit_is_exact() -> None:
    at_limit = "/".join(["x" * 200] * 20) + "/" + "y" * 76
    assert len(at_limit.encode()) == MAX_PATH_BYTES
    with pytest.raises(InvalidPath):
        normalize_path(at_limit + "y")


def test_length_limits_count_utf8_bytes_after_nfc() -> None:
    # 255 NFD "é" are 765 bytes before normalization and 510 after: still too long,
    # while 127 of them (381 bytes as NFD, 254 as NFC) fit.
    assert normalize_path(unicodedata.normalize("NFD", "é" * 127)) == "é" * 127
    with pytest.raises(InvalidPath):
        normalize_path(unicodedata.normalize("NFD", "é" * 128))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "notes.txt", "notes (conflict laptop 2026-11-26 182741).txt", id="with-extension"
        ),
        pytest.param("README", "README (conflict laptop 2026-11-26 182741)", id="no-extension"),
        pytest.param(".bashrc", ".bashrc (conflict laptop 2026-11-26 182741)", id="dotfile"),
        pytest.param(
            ".config.json", ".config (conflict laptop 2026-11-26 182741).json", id="dotfile-ext"
        ),
        pytest.param("a.tar.gz", "a.tar (conflict laptop 2026-11-26 182741).gz", id="multi-dot"),
        pytest.param(
            "books/sci-fi/Dune.epub",
            "books/sci-fi/Dune (conflict laptop 2026-11-26 182741).epub",
            id="nested",
        ),
        pytest.param(
            "v1.2/draft", "v1.2/draft (conflict laptop 2026-11-26 182741)", id="dot-in-parent"
        ),
    ],
)
def test_conflict_path_names_the_device_and_time(path: str, expected: str) -> None:
    assert conflict_path(path, device_name="laptop", when=WHEN) == expected


def test_conflict_path_counts_attempts_after_the_first() -> None:
    second = conflict_path("notes.txt", device_name="laptop", when=WHEN, attempt=2)
    assert second == "notes (conflict laptop 2026-11-26 182741 2).txt"


@pytest.mark.parametrize(
    ("name", "device_name"),
    [
        pytest.param("x" * 255, "laptop", id="long-stem-no-extension"),
        pytest.param("x" * 250 + ".txt", "laptop", id="long-stem-with-extension"),
        pytest.param("é" * 125 + ".md", "laptop", id="multibyte-stem"),
        pytest.param("a." + "x" * 250, "laptop", id="long-extension"),
        pytest.param("notes.txt", "ノートパソコン" * 14, id="long-multibyte-device-name"),
        pytest.param("é" * 127, "é" * 100, id="everything-long"),
    ],
)
def test_conflict_path_stays_a_valid_path(name: str, device_name: str) -> None:
    result = conflict_path(f"dir/{name}", device_name=device_name, when=WHEN)
    assert normalize_path(result) == result
    parent, _, segment = result.rpartition("/")
    assert parent == "dir"
    assert len(segment.encode()) <= MAX_SEGMENT_BYTES
    assert re.search(r"2026-11-26 182741", segment) or "conflict" in segment
    assert result != f"dir/{name}"


def test_conflict_path_trims_the_stem_and_keeps_the_extension() -> None:
    result = conflict_path("x" * 250 + ".txt", device_name="laptop", when=WHEN)
    assert result.endswith(" (conflict laptop 2026-11-26 182741).txt")
    assert len(result.encode()) == MAX_SEGMENT_BYTES
    assert result.startswith("xxx")
