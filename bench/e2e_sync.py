#!/usr/bin/env python3
"""End to end through one real server: device A's first sync until device B holds A's files.

Goals 1 and 2 of issue 7, each measured against its anchor in the same run:

- shelfsync: a fresh `shelfsync serve` (subprocess, free loopback port, its own temp data
  dir, SQLite) with one user; two devices, each the real `shelfsync` command with its own
  SHELFSYNC_CONFIG_DIR, both logged in before the clock starts. A's folder gets the dataset
  the way Syncthing's does (staged on the same filesystem and flushed, then `mv`ed in), then
  t0 and `shelfsync sync A` to completion. B (an empty folder) syncs in one of two modes,
  each run in every round (--mode):
  - watch (the headline): B is `shelfsync sync B --watch`, started before t0 and through
    its first (empty) pass, as Syncthing's B is a running device; t1 is the end of the pass
    that brought B's last file (its JSON summaries count them). B downloads what has landed
    while A still uploads: the overlap goal 2 asks for.
  - sequential: `shelfsync sync B` started after A's sync ended, to completion; t1.
  Afterwards every file of B is compared by sha256 with the generated dataset (and nothing
  else may be in B). Every run uses a brand-new server, data dir, devices and folders.
- anchor: `../shared/bench/syncthing_pair.sh small|large` (two fresh Syncthing 1.19 instances
  on loopback; its own timing: `mv` into A + rescan until B reports every file; sha256-checked),
  run as a subprocess with RUNS=1 per run, interleaved with shelfsync's runs, its result read
  from the st-results.tsv it writes.
- floor (full mode): `../shared/bench/copy_floor.sh` (rsync -a and cp -r of the same data).

Datasets: `../shared/bench/gen_dataset.py` small (10,000 files of 1-16 KiB, 86 MB) and large
(8 x 128 MiB). Goals: shelfsync/Syncthing <= 0.5 (small), <= 1.0 (large).

--quick: one run of each; shelfsync syncs a subset (small: 2,000 files d000-d019; large: 2 of
the 8 files) and the anchor is `rsync -a` of the same subset in the same run: a smoke test
within `make bench-quick`'s 3 minutes, not comparable with the goals. Syncthing's pair always
syncs the whole set (its script takes no subset), which alone took 20-100 s per dataset here,
so it runs in quick mode only with --syncthing (the quick ratio is then a per-file / per-byte
rate extrapolation).

Profiling: BENCH_SERVER_PREFIX, BENCH_A_PREFIX and BENCH_B_PREFIX put a command in front of
the server's, A's or B's `shelfsync` (after the nice), e.g.
BENCH_B_PREFIX="perf record -g -o /tmp/b.data --" or "py-spy record -o /tmp/b.svg --".

Filesystem (--fs): both tools' folders, the server's data and the datasets live in one work
directory. By default (`auto`) that is a fresh ext4 made with mkfs.ext4's defaults (so with a
journal, as every distribution installs it), in a sparse image file loop-mounted for the run and
removed after it (--loop-io: how the loop device writes the image file); `native` uses --work
(default: the temp dir) as it is. These machines' own ext4 has no journal, which makes creating
files after deleting many slow for either tool (see SETTLE_S below); --fs native measures that.
`auto` falls back to native when it cannot mount (not root, no loop device), and says so.

Prints per dataset the medians, the goal and the ratio last. Writes --json OUT (the schema in
bench/_common.py) and the chart (--chart; default docs/benchmarks/e2e.png, or beside the JSON
output in --quick mode).

    .venv/bin/python bench/e2e_sync.py                       # both datasets, 3 runs each
    .venv/bin/python bench/e2e_sync.py --dataset small --runs 5 --json /tmp/e2e.json
    .venv/bin/python bench/e2e_sync.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import REPO, SHARED_BENCH, free_port, host_info, judge, now_iso, write_json

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "e2e-bench-password-1"  # noqa: S105 (a throwaway account on a throwaway server)
USER = "bench"
GOALS = {"small": (1, "<= 0.5"), "large": (2, "<= 1.0")}
FULL_FILES = {"small": 10_000, "large": 8}
QUICK_SUBSET = {"small": [f"d{i:03d}" for i in range(20)], "large": ["big0.bin", "big1.bin"]}
DEFAULT_CHART = REPO / "docs" / "benchmarks" / "e2e.png"
# Syncthing lowers its own priority by default (setLowPriority); the `syncthing serve` process
# that syncs ran at nice 11 here, its I/O priority unchanged (Debian 1.19.2, checked with ps and
# ionice during a run). --priority syncthing (the default) runs shelfsync's server and clients
# at the same nice, so other load on a shared machine slows both alike; --priority normal: as a
# user would run it.
PRIORITY = {"syncthing": ["nice", "-n", "11"], "normal": []}
PREFIX: list[str] = []
SRC: list[str] = []  # --src: run shelfsync from this source tree (PYTHONPATH) instead


# These machines' ext4 has no journal, and without one ext4's inode allocator
# skips inodes freed in the last 5 s (300 s while their inode-table block is
# dirty), reading each one to check (fs/ext4/ialloc.c, recently_deleted). Every
# run of either tool deletes its folders at its end. Before each timed run,
# either tool's: flush, and wait out the 5 s. It does not remove the whole
# effect (a creation dirties the block again, which puts the 300 s back):
# docs/benchmarks.md, "File-system churn".
SETTLE_S = 6.0


def settle_fs() -> None:
    os.sync()
    time.sleep(SETTLE_S)


IMAGE_SIZE = "24G"  # sparse: blocks are allocated as the runs write them


def _mount_of(path: Path) -> dict[str, str]:
    """The /proc/mounts entry holding `path` (the longest mount point above it)."""
    best = {"mount": "/", "device": "?", "type": "?", "options": "?"}
    target = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            device, point, fstype, options, *_ = line.split()
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best["mount"]):
                best = {"mount": point, "device": device, "type": fstype, "options": options}
    return best


@contextlib.contextmanager
def bench_filesystem(
    choice: str, base: str | None, loop_io: str = "buffered"
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Where the work directory goes (None: the temp dir) and what it is, for the record."""
    with contextlib.ExitStack() as stack:
        point: Path | None = None
        loop: dict[str, Any] = {}
        if choice != "native":
            try:
                point = stack.enter_context(_image_filesystem(base, loop_io, loop))
            except (OSError, subprocess.CalledProcessError) as exc:
                if choice == "image":
                    raise
                print(f"  no ext4 image ({exc}); running on the native filesystem", flush=True)
        if point is not None:
            io = "direct" if loop.get("loop_direct_io") else "buffered"
            kind = {
                "kind": f"ext4 image (mkfs.ext4 defaults), loop-mounted ({io} I/O to the image)"
            }
            yield str(point), kind | _mount_of(point) | loop
        else:
            yield base, {"kind": "native"} | _mount_of(Path(base or tempfile.gettempdir()))


@contextlib.contextmanager
def _image_filesystem(base: str | None, loop_io: str, record: dict[str, Any]) -> Iterator[Path]:
    """A fresh ext4 image on a loop device. With `loop_io` "direct" the loop
    device reads and writes its image file with O_DIRECT, as a disk takes what
    the file system sends it; "buffered" (mount -o loop's way) copies every
    block once more into the image file's page cache, a cost no real disk
    adds, paid per byte written (which is why it weighs on whichever tool
    writes more). `record` gets the device's settings, for the JSON."""
    if os.geteuid() != 0:
        raise OSError("mounting an image needs root")
    fd, image = tempfile.mkstemp(prefix="shelfsync-e2e-", suffix=".ext4", dir=base)
    os.close(fd)
    point = Path(tempfile.mkdtemp(prefix="shelfsync-e2e-mnt-", dir=base))
    device = ""
    mounted = False
    try:
        subprocess.run(["truncate", "-s", IMAGE_SIZE, image], check=True)
        subprocess.run(["/usr/sbin/mkfs.ext4", "-q", "-F", image], check=True)
        attach = [
            "losetup",
            "--find",
            "--show",
            f"--direct-io={'on' if loop_io == 'direct' else 'off'}",
        ]
        device = subprocess.run(
            [*attach, image], check=True, capture_output=True, text=True
        ).stdout.strip()
        dio = Path(f"/sys/block/{Path(device).name}/loop/dio")
        record["loop_direct_io"] = dio.read_text().strip() == "1" if dio.exists() else None
        subprocess.run(["mount", device, str(point)], check=True)
        mounted = True
        yield point
    finally:
        if mounted and subprocess.run(["umount", str(point)], check=False).returncode:
            subprocess.run(["umount", "-l", str(point)], check=False)  # busy: detach it anyway
        if device:
            subprocess.run(["losetup", "-d", device], check=False)
        with contextlib.suppress(OSError):
            point.rmdir()
        with contextlib.suppress(OSError):
            os.unlink(image)


class Interrupted(Exception):
    """SIGTERM/SIGHUP: unwind through the cleanups like Ctrl-C does."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


# --------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    kind: str
    path: Path
    files: int
    bytes: int
    manifest: dict[str, str]  # relative path -> sha256
    subset: bool = False

    @property
    def label(self) -> str:
        size = (
            f"{self.bytes / 1e6:,.1f} MB" if self.bytes < 1e9 else f"{self.bytes / 2**30:.2f} GiB"
        )
        return f"{self.kind}: {self.files:,} files, {size}" + (
            " (QUICK subset)" if self.subset else ""
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tree_hashes(root: Path, *, skip: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and dirpath == str(root) and skip in dirnames:
            dirnames.remove(skip)
        for name in filenames:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def make_dataset(kind: str, dest: Path, *, quick: bool) -> Dataset:
    gen = SHARED_BENCH / "gen_dataset.py"
    done = subprocess.run(
        [sys.executable, str(gen), kind, str(dest)], capture_output=True, text=True, check=True
    )
    print(f"  generated {done.stdout.strip()}", flush=True)
    if quick:
        keep = set(QUICK_SUBSET[kind])
        for entry in list(dest.iterdir()):
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    manifest = tree_hashes(dest)
    size = sum((dest / rel).stat().st_size for rel in manifest)
    return Dataset(kind, dest, len(manifest), size, manifest, subset=quick)


# --------------------------------------------------------------------------- processes


class ProcessTree:
    """CPU seconds and peak RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _procs(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        import psutil

        total = 0.0
        for proc in self._procs():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        import psutil

        total = 0
        for proc in self._procs():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss = max(self.peak_rss, self.rss())

    def __enter__(self) -> ProcessTree:
        self.peak_rss = self.rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _kill_group(proc: subprocess.Popen[Any], *, grace_s: float) -> None:
    """Stop a process started with start_new_session=True, and everything it started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers the leader left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def shelfsync_env(config_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSYNC_")}
    if SRC:
        env["PYTHONPATH"] = SRC[0]
    if config_dir is not None:
        env["SHELFSYNC_CONFIG_DIR"] = str(config_dir)
    return env


def compile_sources() -> None:
    """Byte-compile the shelfsync tree the runs use, as an installed package is.

    `pip install` compiles a package's modules; this checkout's editable install
    is not, and with PYTHONDONTWRITEBYTECODE set (as on the development machines)
    every `shelfsync` command would compile all its modules again at start, about
    0.15-0.2 s of CPU each time (measured with py-spy), twice per run.
    """
    tree = Path(SRC[0]) if SRC else REPO / "src"
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "shelfsync")],
        check=False,
        capture_output=True,
    )


def run_cli(args: list[str], stdin: str, env: dict[str, str]) -> None:
    """A short `shelfsync` command; its stderr in the exception when it fails."""
    done = subprocess.run(
        [SHELFSYNC, *args], input=stdin, text=True, capture_output=True, env=env, timeout=120
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-1500:]
        raise RuntimeError(f"`shelfsync {' '.join(args[:2])}` exited {done.returncode}: {tail}")


@contextlib.contextmanager
def shelfsync_server(data_dir: Path, log_path: Path, serve_args: list[str]) -> Iterator[Any]:
    """`shelfsync user add` then `shelfsync serve` on a free loopback port; stopped on exit."""
    run_cli(
        ["user", "add", USER, "--password-stdin", "--data-dir", str(data_dir)],
        f"{PASSWORD}\n",
        shelfsync_env(),
    )
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *PREFIX,
                *os.environ.get("BENCH_SERVER_PREFIX", "").split(),
                *(SHELFSYNC, "serve", "--host", "127.0.0.1", "--port", str(port)),
                *("--data-dir", str(data_dir), "--log-level", "warning", *serve_args),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=shelfsync_env(),
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"shelfsync serve exited {proc.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"shelfsync serve did not answer /healthz: see {log_path}")
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        _kill_group(proc, grace_s=5)


def login(url: str, config_dir: Path, name: str) -> None:
    run_cli(
        ["login", url, "--username", USER, "--device-name", name, "--password-stdin"],
        f"{PASSWORD}\n",
        shelfsync_env(config_dir),
    )


@dataclass
class SyncPass:
    exit: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    summary: dict[str, Any] | None
    stderr_tail: str


def run_sync(folder: Path, config_dir: Path, log_path: Path, timeout_s: float) -> SyncPass:
    """One `shelfsync sync FOLDER --json`; its wall and CPU time (from wait4)."""
    t0 = time.perf_counter()
    with log_path.open("ab") as err:
        proc = subprocess.Popen(
            [
                *PREFIX,
                *os.environ.get(
                    "BENCH_A_PREFIX" if folder.name == "A" else "BENCH_B_PREFIX", ""
                ).split(),
                *(SHELFSYNC, "sync", str(folder), "--json", "--quiet"),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env=shelfsync_env(config_dir),
            start_new_session=True,
        )
    assert proc.stdout is not None

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    killer = threading.Timer(timeout_s, kill)
    killer.start()
    try:
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
        if proc.returncode is None:
            _kill_group(proc, grace_s=2)
    wall = time.perf_counter() - t0
    lines = [ln for ln in stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    summary = None
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            summary = json.loads(lines[-1])
    tail = log_path.read_text(errors="replace")[-2000:] if proc.returncode else ""
    return SyncPass(
        exit=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_kib=usage.ru_maxrss,
        summary=summary,
        stderr_tail=tail,
    )


class Watching:
    """`shelfsync sync FOLDER --watch --json` running in the background, as a device left
    syncing (Syncthing's B is such a device): each pass prints one JSON summary line; the
    moment the passes' downloads add up to the dataset is when B holds every file."""

    def __init__(self, folder: Path, config_dir: Path, log_path: Path, expect: int) -> None:
        self._expect = expect
        self.downloaded = 0
        self.passes = 0
        self.done_at: float | None = None
        self.summaries: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self.usage: Any = None
        self.exit: int | None = None
        self._log_path = log_path
        with log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    *PREFIX,
                    *os.environ.get("BENCH_B_PREFIX", "").split(),
                    SHELFSYNC,
                    *("sync", str(folder), "--watch", "--json", "--quiet"),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                env=shelfsync_env(config_dir),
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("{"):
                continue
            with contextlib.suppress(json.JSONDecodeError):
                summary = json.loads(line)
                self.passes += 1
                self.summaries.append(summary)
                # The engine's counters add up over its passes.
                self.downloaded = int(summary.get("downloaded_files") or 0)
                if self.downloaded >= self._expect and self.done_at is None:
                    self.done_at = time.perf_counter()
                    self.done.set()
                self.ready.set()
        self.ready.set()
        self.done.set()

    def stop(self) -> None:
        """SIGINT (the watcher finishes its pass and exits), then its rusage."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

        killer = threading.Timer(60, kill)
        killer.start()
        try:
            _, status, self.usage = os.wait4(self.proc.pid, 0)
            self.exit = os.waitstatus_to_exitcode(status)
            self.proc.returncode = self.exit
        except ChildProcessError:
            self.exit = self.proc.returncode
        finally:
            killer.cancel()
            _kill_group(self.proc, grace_s=2)
        self._reader.join(timeout=5)

    def tail(self) -> str:
        return self._log_path.read_text(errors="replace")[-2000:]


# --------------------------------------------------------------------------- one run each


@dataclass
class ShelfsyncRun:
    ok: bool
    total_s: float | None = None
    a_s: float | None = None
    b_s: float | None = None
    a_cpu_s: float | None = None
    b_cpu_s: float | None = None
    server_cpu_s: float | None = None
    server_peak_rss_mib: float | None = None
    client_peak_rss_mib: float | None = None
    a_exit: int | None = None
    b_exit: int | None = None
    verified: bool = False
    error: str | None = None
    a_summary: dict[str, Any] | None = None
    b_summary: dict[str, Any] | None = None


@contextlib.contextmanager
def _devices_and_server(
    ds: Dataset, run_dir: Path, log: Path, serve_args: list[str]
) -> Iterator[tuple[Any, Path]]:
    """A fresh server, devices A and B logged in (folders `run_dir`/A and /B, configs
    /A.conf and /B.conf), the dataset staged beside them and flushed: (server, stage)."""
    (run_dir / "A").mkdir()
    (run_dir / "B").mkdir()
    with shelfsync_server(run_dir / "server", Path(f"{log}-server.log"), serve_args) as (
        server,
        url,
    ):
        login(url, run_dir / "A.conf", "bench-A")
        login(url, run_dir / "B.conf", "bench-B")
        stage = run_dir / "stage"
        subprocess.run(["cp", "-a", str(ds.path), str(stage)], check=True)
        settle_fs()
        yield server, stage


def _with_a(a: SyncPass, server_cpu: float, tree: ProcessTree) -> ShelfsyncRun:
    """A run's record with A's pass and the server's figures filled in (not ok yet)."""
    return ShelfsyncRun(
        ok=False,
        a_s=a.wall_s,
        a_cpu_s=a.cpu_s,
        a_exit=a.exit,
        a_summary=a.summary,
        server_cpu_s=server_cpu,
        server_peak_rss_mib=tree.peak_rss / 2**20,
    )


def _verified(res: ShelfsyncRun, folder_b: Path, ds: Dataset) -> ShelfsyncRun:
    """`res`, ok when B holds exactly the dataset (sha256 of every file)."""
    got = tree_hashes(folder_b, skip=".shelfsync")
    res.verified = got == ds.manifest
    if not res.verified:
        missing = sorted(set(ds.manifest) - set(got))
        extra = sorted(set(got) - set(ds.manifest))
        differ = sorted(k for k in set(got) & set(ds.manifest) if got[k] != ds.manifest[k])
        res.error = (
            f"B differs from the dataset: {len(missing)} missing {missing[:3]}, "
            f"{len(extra)} extra {extra[:3]}, {len(differ)} different {differ[:3]}"
        )
    res.ok = res.verified
    return res


def shelfsync_run(
    ds: Dataset,
    work: Path,
    logs: Path,
    tag: str,
    serve_args: list[str],
    timeout_s: float,
    mode: str = "sequential",
) -> ShelfsyncRun:
    """One run. mode "sequential": `shelfsync sync A` to completion, then `shelfsync sync B`
    to completion. mode "watch": B is `shelfsync sync B --watch`, started (and through its
    first, empty pass) before the clock starts, then `shelfsync sync A`; the clock stops when
    B's passes have downloaded every file. b_s is then how long B finished after A did."""
    if mode == "watch":
        return _watch_run(ds, work, logs, tag, serve_args, timeout_s)
    run_dir = work / f"ss-{tag}"
    run_dir.mkdir()
    try:
        folder_a, folder_b = run_dir / "A", run_dir / "B"
        conf_a, conf_b = run_dir / "A.conf", run_dir / "B.conf"
        log = logs / f"ss-{tag}"
        with _devices_and_server(ds, run_dir, log, serve_args) as (server, stage):
            tree = ProcessTree(server.pid)
            cpu0 = tree.cpu_s()
            with tree:
                t0 = time.perf_counter()
                for entry in stage.iterdir():
                    entry.rename(folder_a / entry.name)
                a = run_sync(folder_a, conf_a, Path(f"{log}-A.log"), timeout_s)
                b = (
                    run_sync(folder_b, conf_b, Path(f"{log}-B.log"), timeout_s)
                    if a.exit == 0
                    else None
                )
                t1 = time.perf_counter()
            server_cpu = tree.cpu_s() - cpu0
        res = _with_a(a, server_cpu, tree)
        if b is None or a.exit != 0:
            res.error = f"A's sync exited {a.exit}: {a.stderr_tail}"
            return res
        res.b_s, res.b_cpu_s, res.b_exit, res.b_summary = b.wall_s, b.cpu_s, b.exit, b.summary
        res.client_peak_rss_mib = max(a.maxrss_kib, b.maxrss_kib) / 1024
        if b.exit != 0:
            res.error = f"B's sync exited {b.exit}: {b.stderr_tail}"
            return res
        res.total_s = t1 - t0
        return _verified(res, folder_b, ds)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _watch_run(
    ds: Dataset, work: Path, logs: Path, tag: str, serve_args: list[str], timeout_s: float
) -> ShelfsyncRun:
    run_dir = work / f"ssw-{tag}"
    run_dir.mkdir()
    try:
        folder_a, folder_b = run_dir / "A", run_dir / "B"
        conf_a, conf_b = run_dir / "A.conf", run_dir / "B.conf"
        log = logs / f"ssw-{tag}"
        with _devices_and_server(ds, run_dir, log, serve_args) as (server, stage):
            watcher = Watching(folder_b, conf_b, Path(f"{log}-B.log"), ds.files)
            try:
                if not watcher.ready.wait(timeout=120) or watcher.proc.poll() is not None:
                    return ShelfsyncRun(
                        ok=False, error=f"B's watch did not start: {watcher.tail()}"
                    )
                tree = ProcessTree(server.pid)
                cpu0 = tree.cpu_s()
                with tree:
                    t0 = time.perf_counter()
                    for entry in stage.iterdir():
                        entry.rename(folder_a / entry.name)
                    a = run_sync(folder_a, conf_a, Path(f"{log}-A.log"), timeout_s)
                    t_a = time.perf_counter()
                    finished = a.exit == 0 and watcher.done.wait(timeout=timeout_s)
                    t1 = watcher.done_at if watcher.done_at is not None else time.perf_counter()
                server_cpu = tree.cpu_s() - cpu0
            finally:
                watcher.stop()
        res = _with_a(a, server_cpu, tree)
        res.b_exit = watcher.exit
        res.b_summary = {
            "passes": watcher.passes,
            "downloaded_files": watcher.downloaded,
            "pass_elapsed_s": [x.get("elapsed_s") for x in watcher.summaries],
            "pass_downloaded": [x.get("downloaded_files") for x in watcher.summaries],
        }
        if watcher.usage is not None:
            res.b_cpu_s = watcher.usage.ru_utime + watcher.usage.ru_stime
            res.client_peak_rss_mib = max(a.maxrss_kib, watcher.usage.ru_maxrss) / 1024
        if a.exit != 0:
            res.error = f"A's sync exited {a.exit}: {a.stderr_tail}"
            return res
        if not finished or watcher.done_at is None:
            res.error = (
                f"B's watch downloaded {watcher.downloaded} of {ds.files} files "
                f"(exit {watcher.exit}): {watcher.tail()}"
            )
            return res
        res.total_s = t1 - t0
        res.b_s = max(t1 - t_a, 0.0)
        return _verified(res, folder_b, ds)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class SyncthingRun:
    ok: bool
    sync_s: float | None = None
    scan_a_s: float | None = None
    files: int | None = None
    verified: bool = False
    version: str | None = None
    error: str | None = None


def syncthing_run(kind: str, work: Path, results: Path, tag: str, timeout_s: float) -> SyncthingRun:
    """One `syncthing_pair.sh KIND` with RUNS=1 on free ports; its row of st-results.tsv."""
    settle_fs()
    res_dir = results / f"st-{tag}"
    res_dir.mkdir(parents=True)
    st_work = work / f"st-{tag}"  # the script creates it and removes it on exit
    env = dict(os.environ)
    env.update(
        RUNS="1",
        RESULTS=str(res_dir),
        ST_WORK=str(st_work),
        ST_GUI_A=str(free_port()),
        ST_GUI_B=str(free_port()),
        ST_PORT_A=str(free_port()),
        ST_PORT_B=str(free_port()),
        ST_TIMEOUT=str(int(timeout_s)),
    )
    with (res_dir / "stdout.log").open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(SHARED_BENCH / "syncthing_pair.sh"), kind],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout_s + 300)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _kill_group(proc, grace_s=15)  # its EXIT trap stops the pair and removes ST_WORK
            shutil.rmtree(st_work, ignore_errors=True)
    text = (res_dir / "stdout.log").read_text(errors="replace")
    version = next((ln for ln in text.splitlines() if ln.startswith("syncthing v")), None)
    rows = []
    tsv = res_dir / "st-results.tsv"
    if tsv.exists():
        with tsv.open() as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["dataset"] == kind]
    if not rows:
        return SyncthingRun(
            False, version=version, error=f"no result (exit {proc.returncode}): {text[-1500:]}"
        )
    row = rows[-1]
    ok = row["verified"] == "yes" and row["sync_s"] != "NA"
    return SyncthingRun(
        ok=ok,
        sync_s=float(row["sync_s"]) if row["sync_s"] != "NA" else None,
        scan_a_s=float(row["scanA_s"]) if row["scanA_s"] != "NA" else None,
        files=int(row["files"]),
        verified=row["verified"] == "yes",
        version=version,
        error=None if ok else f"not verified / timed out: {row}",
    )


def copy_floor(kind: str, results: Path, bench_data: Path, runs: int) -> dict[str, Any]:
    """`copy_floor.sh KIND` (hyperfine); median/min/max of each of its rows."""
    settle_fs()
    env = dict(os.environ, RUNS=str(runs), RESULTS=str(results), BENCH_DATA=str(bench_data))
    done = subprocess.run(
        ["bash", str(SHARED_BENCH / "copy_floor.sh"), kind],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        start_new_session=True,
    )
    path = results / f"copy-{kind}.json"
    if done.returncode != 0 or not path.exists():
        return {"error": f"copy_floor.sh exited {done.returncode}: {done.stderr[-800:]}"}
    rows: dict[str, Any] = {}
    for r in json.loads(path.read_text())["results"]:
        name = re.sub(r"\s*\((small|large)\)$", "", r["command"])
        times = sorted(r["times"])
        rows[name] = {
            "median_s": statistics.median(times),
            "min_s": times[0],
            "max_s": times[-1],
            "n": len(times),
        }
    return rows


def quick_rsync(ds: Dataset, work: Path) -> dict[str, Any]:
    """--quick: one `rsync -a` of the (subset) dataset, destination removed and synced first."""
    dst = work / "rsync-dst"
    shutil.rmtree(dst, ignore_errors=True)
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["rsync", "-a", f"{ds.path}/", f"{dst}/"], check=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(dst, ignore_errors=True)
    return {"rsync -a": {"median_s": wall, "min_s": wall, "max_s": wall, "n": 1}}


# --------------------------------------------------------------------------- reporting


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    v = sorted(values)
    return {"median_s": statistics.median(v), "min_s": v[0], "max_s": v[-1], "n": len(v)}


def fmt_stats(s: dict[str, Any] | None) -> str:
    if s is None:
        return "no valid run"
    if s["n"] == 1:
        return f"{s['median_s']:.2f} s (n=1)"
    return f"{s['median_s']:.2f} s (min {s['min_s']:.2f}, max {s['max_s']:.2f}, n={s['n']})"


MODES = ("watch", "sequential")
MODE_LABEL = {
    "watch": "B watching",
    "sequential": "A then B",
}


def _mode_summary(
    kind: str, ds: Dataset, st_stats: dict[str, Any] | None, ss: list[ShelfsyncRun], st_files: int
) -> dict[str, Any]:
    ss_stats = stats([r.total_s for r in ss if r.ok and r.total_s is not None])
    ratio = None
    scale = 1.0
    if st_stats and ss_stats:
        if ds.subset:  # shelfsync synced a subset, Syncthing the whole set: compare rates
            scale = st_files / ds.files if kind == "small" else 8 / ds.files
        ratio = ss_stats["median_s"] * scale / st_stats["median_s"]
    return {
        "shelfsync": ss_stats,
        "shelfsync_a": stats([r.a_s for r in ss if r.ok and r.a_s is not None]),
        "shelfsync_b": stats([r.b_s for r in ss if r.ok and r.b_s is not None]),
        "ratio": ratio,
        "extrapolation_factor": scale,
        "met": judge(ratio, GOALS[kind][1]) if not ds.subset else None,
        "shelfsync_runs": [asdict(r) for r in ss],
    }


def summarize(
    kind: str,
    ds: Dataset,
    st: list[SyncthingRun],
    ss_by_mode: dict[str, list[ShelfsyncRun]],
    floor: dict[str, Any],
) -> dict[str, Any]:
    """The first mode measured is the headline (`shelfsync`, `ratio`, `met`); every mode's
    own figures are under `modes`."""
    st_stats = stats([r.sync_s for r in st if r.ok and r.sync_s is not None])
    goal, target = GOALS[kind]
    st_files = (st[0].files if st else None) or FULL_FILES[kind]
    modes = {m: _mode_summary(kind, ds, st_stats, runs, st_files) for m, runs in ss_by_mode.items()}
    head = modes[next(iter(modes))]
    rsync = (floor or {}).get("rsync -a")
    floor_ratio = (
        head["shelfsync"]["median_s"] / rsync["median_s"]
        if head["shelfsync"] and isinstance(rsync, dict) and rsync.get("median_s")
        else None
    )
    return {
        "dataset": ds.label,
        "files": ds.files,
        "bytes": ds.bytes,
        "quick_subset": ds.subset,
        "headline_mode": next(iter(modes)),
        "extrapolation_factor": head["extrapolation_factor"],
        "syncthing": st_stats,
        "shelfsync": head["shelfsync"],
        "shelfsync_a": head["shelfsync_a"],
        "shelfsync_b": head["shelfsync_b"],
        "floor": floor,
        "goal": goal,
        "target": target,
        "ratio": head["ratio"],
        "floor_ratio": floor_ratio,
        "met": head["met"],
        "modes": modes,
        "syncthing_runs": [asdict(r) for r in st],
        "shelfsync_runs": [r for m in modes.values() for r in m["shelfsync_runs"]],
    }


def print_summary(kind: str, s: dict[str, Any], quick: bool) -> None:
    print(f"\n== {s['dataset']}{' -- QUICK, not comparable with the goals' if quick else ''}")
    print(f"  Syncthing A->B (whole set):   {fmt_stats(s['syncthing'])}")
    for mode, m in s["modes"].items():
        print(f"  shelfsync, {MODE_LABEL[mode]}: {fmt_stats(m['shelfsync'])}")
        if m["shelfsync_a"]:
            b_what = "B done after A" if mode == "watch" else "B's sync"
            print(f"    of which A's sync:          {fmt_stats(m['shelfsync_a'])}")
            print(f"    {b_what + ':':27s} {fmt_stats(m['shelfsync_b'])}")
        if m["ratio"] is not None:
            print(f"    ratio to Syncthing:         {m['ratio']:.2f}")
    for name, row in (s["floor"] or {}).items():
        if isinstance(row, dict):
            print(f"  floor {name + ':':23s} {fmt_stats(row)}")
    failed = [r for r in s["shelfsync_runs"] if not r["ok"]] + [
        r for r in s["syncthing_runs"] if not r["ok"]
    ]
    for r in failed:
        print(f"  FAILED RUN: {r['error']}")
    print(f"  goal {s['goal']}: shelfsync/Syncthing {s['target']}")
    if s["ratio"] is None:
        print(f"  ratio {kind}: not measured")
    elif quick:
        print(
            f"  ratio {kind} (QUICK: per-{'file' if kind == 'small' else 'byte'} rate, "
            f"shelfsync x{s['extrapolation_factor']:.0f} extrapolated): {s['ratio']:.2f}"
        )
    else:
        verdict = "met" if s["met"] else "NOT met"
        print(
            f"  ratio {kind} shelfsync/Syncthing ({s['headline_mode']}): {s['ratio']:.2f} "
            f"({verdict})"
        )


def make_chart(summaries: dict[str, dict[str, Any]], path: Path, quick: bool, when: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(summaries)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 4.8), squeeze=False)
    bar_name = {"watch": "shelfsync,\nB watching", "sequential": "shelfsync,\nA then B"}
    colors = {
        "Syncthing 1.19": "#7f7f7f",
        bar_name["watch"]: "#1f77b4",
        bar_name["sequential"]: "#9ecae1",
        "rsync -a (floor)": "#2ca02c",
    }
    for ax, kind in zip(axes[0], kinds, strict=True):
        s = summaries[kind]
        bars: list[tuple[str, dict[str, Any] | None]] = [
            ("Syncthing 1.19", s["syncthing"]),
            *((bar_name[mode], m["shelfsync"]) for mode, m in s["modes"].items()),
            ("rsync -a (floor)", (s["floor"] or {}).get("rsync -a")),
        ]
        names, med, lo, hi = [], [], [], []
        for name, st in bars:
            if not st:
                continue
            names.append(name)
            med.append(st["median_s"])
            lo.append(st["median_s"] - st["min_s"])
            hi.append(st["max_s"] - st["median_s"])
        xs = range(len(names))
        ax.bar(xs, med, yerr=[lo, hi], capsize=4, color=[colors[n] for n in names])
        for x, v in zip(xs, med, strict=True):
            ax.annotate(
                f"{v:.2f} s",
                (x, v),
                ha="center",
                va="bottom",
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=9,
            )
        if s["syncthing"] and not quick:
            goal_s = s["syncthing"]["median_s"] * float(s["target"].split()[1])
            ax.axhline(
                goal_s,
                color="#d62728",
                linestyle="--",
                linewidth=1,
                label=f"goal: {s['target']} x Syncthing",
            )
            ax.legend(loc="upper right", fontsize=8)
        labels = names
        if s["quick_subset"]:  # say which bar synced how much
            full = f"{FULL_FILES[kind]:,} files"
            part = f"{s['files']:,} files"
            labels = [f"{n}\n({full if n == 'Syncthing 1.19' else part})" for n in names]
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("seconds, A's files until B holds them (median, min-max)")
        ratio = (
            ", ".join(
                f"{mode}: ratio {m['ratio']:.2f}"
                for mode, m in s["modes"].items()
                if m["ratio"] is not None
            )
            or "ratio: n/a"
        )
        ax.set_title(f"{s['dataset']}\n{ratio}", fontsize=10)
        ax.margins(y=0.15)
    title = "shelfsync end to end vs Syncthing (one run, same machine)"
    if quick:
        title = "QUICK (subsets, 1 run): NOT comparable with the goals"
    fig.suptitle(f"{title}\n{when}, {os.cpu_count()} CPUs, loopback", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _run_all(
    args: argparse.Namespace,
    kinds: list[str],
    runs: int,
    modes: list[str],
    with_syncthing: bool,
    work_base: str | None,
) -> dict[str, dict[str, Any]] | None:
    """Every dataset's runs in a new work directory under `work_base`; None: interrupted."""
    work = Path(tempfile.mkdtemp(prefix="shelfsync-e2e-", dir=work_base))
    logs = Path(args.keep_logs) if args.keep_logs else work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            print(
                f"\n-- {kind}: {runs} run(s) each, Syncthing and shelfsync interleaved", flush=True
            )
            ds = make_dataset(kind, work / f"src-{kind}", quick=args.quick)
            st_runs: list[SyncthingRun] = []
            ss_runs: dict[str, list[ShelfsyncRun]] = {m: [] for m in modes}
            for i in range(1, runs + 1):
                tag = f"{kind}-{i}"
                if with_syncthing:
                    r = syncthing_run(kind, work, logs, tag, args.timeout)
                    st_runs.append(r)
                    print(
                        f"  run {i} Syncthing: {r.sync_s} s (scan A {r.scan_a_s} s, "
                        f"verified {r.verified}){'' if r.ok else ' FAILED ' + str(r.error)}",
                        flush=True,
                    )
                for mode in modes:
                    try:
                        s = shelfsync_run(
                            ds, work, logs, f"{tag}-{mode}", args.serve_arg, args.timeout, mode
                        )
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        s = ShelfsyncRun(ok=False, error=f"{type(exc).__name__}: {exc}")
                    ss_runs[mode].append(s)
                    print(
                        f"  run {i} shelfsync ({mode}): {s.total_s and round(s.total_s, 2)} s "
                        f"(A {s.a_s and round(s.a_s, 2)} s cpu {s.a_cpu_s and round(s.a_cpu_s, 1)}"
                        f", B {'+' if mode == 'watch' else ''}{s.b_s and round(s.b_s, 2)} s "
                        f"cpu {s.b_cpu_s and round(s.b_cpu_s, 1)}, "
                        f"server cpu {s.server_cpu_s and round(s.server_cpu_s, 1)} s, "
                        f"verified {s.verified}){'' if s.ok else ' FAILED ' + str(s.error)}",
                        flush=True,
                    )
            if args.no_floor:
                floor: dict[str, Any] = {}
            elif args.quick:
                floor = quick_rsync(ds, work)
            else:
                floor = copy_floor(kind, logs, work / "floor", runs)
            shutil.rmtree(ds.path, ignore_errors=True)
            summaries[kind] = summarize(kind, ds, st_runs, ss_runs, floor)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc!r}); cleaning up", file=sys.stderr)
        return None
    finally:
        if args.keep_logs:
            print(f"logs kept in {logs}")
        shutil.rmtree(work, ignore_errors=True)
    return summaries


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="one run each, subsets: a smoke test")
    ap.add_argument(
        "--json", metavar="OUT", help="write the results here (schema: bench/_common.py)"
    )
    ap.add_argument("--dataset", choices=["small", "large", "both"], default="both")
    ap.add_argument(
        "--runs", type=int, help="runs per tool and dataset (default 3; 1 with --quick)"
    )
    ap.add_argument("--chart", metavar="PNG", help=f"default {DEFAULT_CHART.relative_to(REPO)}")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--no-syncthing", action="store_true", help="skip the anchor (no ratio)")
    ap.add_argument(
        "--syncthing", action="store_true", help="with --quick: run the Syncthing anchor too"
    )
    ap.add_argument(
        "--mode",
        choices=["watch", "sequential", "both"],
        default="both",
        help="how B syncs: watch (B runs `shelfsync sync --watch` from before the clock starts, "
        "as Syncthing's B runs), sequential (`sync A` to the end, then `sync B`), or both "
        "(default; watch is the headline)",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip copy_floor.sh")
    ap.add_argument("--work", metavar="DIR", help="scratch parent dir (default: the temp dir)")
    ap.add_argument("--keep-logs", metavar="DIR", help="keep server/client/syncthing logs here")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per sync run")
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `shelfsync serve` (repeatable), e.g. --serve-arg=--server=granian",
    )
    ap.add_argument(
        "--priority",
        choices=sorted(PRIORITY),
        default="syncthing",
        help="syncthing (default): shelfsync at nice 11, as Syncthing's own low priority "
        "ran here; normal: unchanged",
    )
    ap.add_argument(
        "--fs",
        choices=["auto", "image", "native"],
        default="auto",
        help="auto (default): a fresh journaled ext4 image, loop-mounted, else native; "
        "image: that or fail; native: --work or the temp dir as it is",
    )
    ap.add_argument(
        "--loop-io",
        choices=["buffered", "direct"],
        default="buffered",
        help="how the image's loop device reaches its file: buffered (default, as every "
        "table so far; mount -o loop's way: one more page-cache copy of every block) or "
        "direct (O_DIRECT, as a disk: both tools about 20 %% faster on the large set, a little "
        "slower on the small one, the ratios within the noise)",
    )
    ap.add_argument(
        "--src",
        metavar="DIR",
        help="run shelfsync from this source tree (PYTHONPATH=DIR), e.g. a commit unpacked "
        "with `git archive COMMIT | tar -x -C /tmp/snap` and --src /tmp/snap/src",
    )
    args = ap.parse_args()
    PREFIX[:] = PRIORITY[args.priority]
    if args.src:
        SRC[:] = [str(Path(args.src).resolve())]
    runs = args.runs or (1 if args.quick else 3)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    with_syncthing = not args.no_syncthing and (args.syncthing or not args.quick)
    kinds = ["small", "large"] if args.dataset == "both" else [args.dataset]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    compile_sources()
    started = now_iso()
    host = host_info()
    command = "bench/e2e_sync.py " + " ".join(sys.argv[1:])
    print(f"e2e_sync: {command.strip()} -- {started}, load average {host['loadavg']}", flush=True)
    with bench_filesystem(args.fs, args.work, args.loop_io) as (work_base, filesystem):
        print(
            f"filesystem: {filesystem['kind']} ({filesystem['type']} {filesystem['options']})",
            flush=True,
        )
        summaries = _run_all(args, kinds, runs, modes, with_syncthing, work_base)
    if summaries is None:
        return 130

    chart: Path | None = None
    if not args.no_chart and summaries:
        if args.chart:
            chart = Path(args.chart)
        elif args.quick:
            base = Path(args.json).parent if args.json else Path(tempfile.gettempdir())
            chart = base / "e2e-quick.png"
        else:
            chart = DEFAULT_CHART
        make_chart(summaries, chart, args.quick, started[:10])

    goals = []
    for kind, s in summaries.items():
        st_med = s["syncthing"]["median_s"] if s["syncthing"] else None
        rsync_med = (s["floor"].get("rsync -a") or {}).get("median_s")
        if st_med:
            anchor = f"Syncthing A->B: {st_med:.2f} s"
        elif rsync_med:
            anchor = f"rsync -a of the same {s['files']:,} files: {rsync_med:.2f} s"
        else:
            anchor = "not measured"
        for mode, m in s["modes"].items():
            ss_med = m["shelfsync"]["median_s"] if m["shelfsync"] else None
            quick_note = (
                f" (QUICK: {s['files']:,}-file subset, rate x{m['extrapolation_factor']:.0f})"
            )
            goals.append(
                {
                    "goal": s["goal"],
                    "label": f"end to end, {kind} files, {MODE_LABEL[mode]}",
                    "mode": mode,
                    "headline": mode == s["headline_mode"],
                    "anchor": anchor,
                    "shelfsync": (f"{ss_med:.2f} s" if ss_med else "failed")
                    + (quick_note if args.quick and ss_med else ""),
                    "ratio": m["ratio"],
                    "target": s["target"],
                    "met": m["met"],
                    "comparable": not args.quick,
                    "command": f"bench/e2e_sync.py --dataset {kind} --mode {mode}"
                    + (" --quick" if args.quick else ""),
                }
            )
    out = {
        "script": "e2e_sync",
        "schema": 1,
        "quick": args.quick,
        "command": command.strip(),
        "started": started,
        "finished": now_iso(),
        "host": host,
        "load_after": list(os.getloadavg()),
        "runs": runs,
        "modes": modes,
        "priority": args.priority,
        "src": SRC[0] if SRC else str(REPO / "src"),
        "chart": str(chart) if chart else None,
        "filesystem": filesystem,
        "goals": goals,
        "datasets": summaries,
    }
    for kind, s in summaries.items():
        print_summary(kind, s, args.quick)
    if chart:
        print(f"\nchart: {chart}")
    if args.json:
        write_json(args.json, out)
        print(f"json: {args.json}")
    for kind, s in summaries.items():  # the ratios last
        if s["ratio"] is None and s["floor_ratio"] is not None:
            print(
                f"RATIO {kind} shelfsync/rsync floor: {s['floor_ratio']:.1f} "
                "(QUICK, no Syncthing in this run: --syncthing to add it)"
            )
    for g in goals:
        r = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}"
        print(
            f"RATIO goal {g['goal']} ({g['label']}): {r} (target {g['target']})"
            + (" QUICK" if args.quick else "")
        )
    ok = all(r["ok"] for s in summaries.values() for r in s["shelfsync_runs"] + s["syncthing_runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
