"""paths.py, localnames.py, config.py: nothing is written outside the folder."""

from __future__ import annotations

import stat
import unicodedata
from pathlib import Path

import pytest

from shelfsync.client.config import (
    DeviceConfig,
    config_dir,
    delete_config,
    load_config,
    save_config,
)
from shelfsync.client.errors import ConfigError, NotLoggedIn, UnsafePath
from shelfsync.client.localnames import LocalNamer, is_case_insensitive
from shelfsync.client.paths import resolve_inside, validate_library_path


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "/abs",
        "a//b",
        "a/./b",
        "trailing/",
        "back\\slash",
        "nul\x00",
        "",
    ],
)
def test_unsafe_remote_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        validate_library_path(path)


def test_remote_paths_are_compared_in_nfc() -> None:
    assert validate_library_path(unicodedata.normalize("NFD", "Café.txt")) == "Café.txt"


def test_resolve_inside_refuses_a_symlinked_parent(tmp_path: Path) -> None:
    root = (tmp_path / "root").resolve()
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="symlink"):
        resolve_inside(root, "escape/file.txt")


def test_resolve_inside_refuses_to_write_through_a_symlinked_file(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "target").write_text("x")
    (root / "link").symlink_to(root / "target")
    with pytest.raises(UnsafePath):
        resolve_inside(root, "link")


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "", "a//b"])
def test_resolve_inside_refuses_traversal(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path.resolve(), rel)


def test_resolve_inside_accepts_new_nested_paths(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert resolve_inside(root, "new/dir/file.txt") == root / "new/dir/file.txt"


def test_case_collisions_get_a_suffixed_name_on_case_insensitive_systems() -> None:
    namer = LocalNamer(case_insensitive=True, dirs={}, taken=["Song.mp3"])
    name, warning = namer.name_for("song.mp3")
    assert name == "song (case 2).mp3"
    assert warning is not None
    assert "case" in warning
    assert namer.name_for("SONG.mp3")[0] == "SONG (case 3).mp3"
    assert namer.name_for("README")[0] == "README"
    assert namer.name_for("readme")[0] == "readme (case 2)"


def test_case_sensitive_systems_keep_both_names_as_they_are() -> None:
    namer = LocalNamer(case_insensitive=False, dirs={}, taken=["Song.mp3"])
    assert namer.name_for("song.mp3") == ("song.mp3", None)


def test_new_files_join_an_existing_directory_of_another_spelling() -> None:
    nfd_dir = unicodedata.normalize("NFD", "Café")
    namer = LocalNamer(case_insensitive=False, dirs={"Café": nfd_dir}, taken=[])
    assert namer.name_for("Café/menu.txt")[0] == f"{nfd_dir}/menu.txt"
    ci = LocalNamer(case_insensitive=True, dirs={"Music": "music"}, taken=[])
    assert ci.name_for("MUSIC/a.mp3")[0] == "music/a.mp3"


def test_the_probe_detects_this_file_system(tmp_path: Path) -> None:
    assert is_case_insensitive(tmp_path) in (True, False)
    assert list(tmp_path.iterdir()) == []


CONFIG = DeviceConfig("http://127.0.0.1:8080", "dev-1", "ssd_secret", "laptop")


def test_config_keeps_only_the_device_token_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELFSYNC_CONFIG_DIR", str(tmp_path / "cfg"))
    assert config_dir() == tmp_path / "cfg"
    path = save_config(CONFIG)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config() == CONFIG
    assert set(path.read_text().split('"')) >= {"device_token", "ssd_secret"}
    assert "password" not in path.read_text()
    assert delete_config()
    with pytest.raises(NotLoggedIn):
        load_config()


def test_a_damaged_config_is_reported(tmp_path: Path) -> None:
    (tmp_path / "device.json").write_text("{not json")
    with pytest.raises(ConfigError):
        load_config(tmp_path)
