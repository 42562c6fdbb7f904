#!/usr/bin/env python3
"""Run every bench script, collect their JSON into one results file, rewrite the table.

`make bench` calls this with the script names of the Makefile's BENCH_SCRIPTS; each
bench/NAME.py is run as `python bench/NAME.py [--quick] --json OUT/NAME.json` (one after
the other: they share the machine's cores), its output shown and kept in OUT/NAME.log.
A script that does not exist (yet) or writes no JSON leaves its goals "not measured"; a
script exiting non-zero (a goal missed) does not stop the others.

Then OUT/results.json holds every script's JSON, and the table between the markers
`<!-- bench:table:start -->` and `<!-- bench:table:end -->` of docs/benchmarks.md gets one
row per goal of issue 7. Full mode also copies the results to docs/benchmarks/results.json
and rewrites the table in docs/benchmarks.md; --quick prints the table and leaves docs/
alone (quick figures are not comparable with the goals) unless --update-docs.

The rows come from each JSON's `goals` list (the schema is in bench/_common.py); for the
JSON shapes of bench/transfer.py and bench/feed_report.py without one, adapters below
derive the rows from their figures.

    .venv/bin/python bench/run_all.py e2e_sync transfer feed_report longpoll
    .venv/bin/python bench/run_all.py --quick
    .venv/bin/python bench/run_all.py --no-run --out /tmp/shelfsync-bench   # table only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import REPO, host_info, judge, now_iso, write_json

Json = dict[str, Any]

SCRIPTS = ["e2e_sync", "transfer", "feed_report", "longpoll"]
DOC = REPO / "docs" / "benchmarks.md"
DOC_RESULTS = REPO / "docs" / "benchmarks" / "results.json"
START, END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
QUICK_BUDGET_S = 180

# goal number -> (what, target, script that measures it)
GOALS: dict[int, tuple[str, str, str]] = {
    1: (
        "End to end, 10,000 small files (86 MB): A's first sync until B holds them",
        "<= 0.5x Syncthing",
        "e2e_sync",
    ),
    2: ("End to end, 8 x 128 MiB", "<= 1.0x Syncthing", "e2e_sync"),
    3: ("Upload of 1 GiB through the client code", ">= 1.0x nginx WebDAV PUT", "transfer"),
    4: (
        "Download: full 1 GiB; 1,000 random 1 MiB ranges",
        ">= 0.5x nginx (throughput; request rate)",
        "transfer",
    ),
    5: (
        "Feed page of 1,000 at start/middle/end of 1,000,000 items; report ingest "
        "(SQLite and PostgreSQL)",
        "p50 <= 25 ms and <= 1.5x the 10,000-item page; ingest >= 10,000 changes/s",
        "feed_report",
    ),
    6: (
        "Long-poll: 1,000 idle waits on one process, one change wakes all",
        "all woken within 1 s; <= 50 KiB per idle request",
        "longpoll",
    ),
    7: (
        "Server RSS while receiving a 1 GiB upload and serving a 1 GiB download",
        "< 150 MiB",
        "transfer",
    ),
}


# --------------------------------------------------------------------------- running


def run_script(name: str, out: Path, quick: bool, timeout_s: float | None) -> Json:
    script = REPO / "bench" / f"{name}.py"
    json_path = out / f"{name}.json"
    log_path = out / f"{name}.log"
    entry: Json = {"script": name, "json_path": str(json_path), "log": str(log_path)}
    if not script.exists():
        print(f"\n### {name}: bench/{name}.py does not exist (yet): its goals stay not measured")
        entry["status"] = "missing"
        return entry
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), *(["--quick"] if quick else []), "--json", str(json_path)]
    print(f"\n### {name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        assert proc.stdout is not None
        try:
            deadline = None if timeout_s is None else t0 + timeout_s
            for line in proc.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                log.write(line)
                if deadline is not None and time.monotonic() > deadline:
                    print(f"### {name}: over {timeout_s:.0f} s, stopping it (SIGINT)")
                    proc.send_signal(2)
                    deadline = None
            proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(2)  # the script cleans up its servers on SIGINT
            proc.wait()
            raise
    entry["exit"] = proc.returncode
    entry["seconds"] = round(time.monotonic() - t0, 1)
    if json_path.exists():
        try:
            entry["result"] = json.loads(json_path.read_text())
            entry["status"] = "ok" if proc.returncode == 0 else "goal missed or run failed"
        except json.JSONDecodeError as exc:
            entry["status"] = f"bad JSON: {exc}"
    else:
        entry["status"] = f"no JSON (exit {proc.returncode})"
    print(f"### {name}: exit {proc.returncode}, {entry['seconds']} s, {entry['status']}")
    return entry


# --------------------------------------------------------------------------- goal rows


def _f(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def adapt_transfer(data: Json) -> list[Json]:
    """bench/transfer.py without a `goals` list: {"ratios": {server: {...}}, "results": [...]}."""
    rows: list[Json] = []
    quick = bool(data.get("quick"))
    goal = data.get("goal", {})
    for result in data.get("results", []):
        server = result["server"]
        up, dl, rg, mem = result["upload"], result["download"], result["ranges"], result["memory"]
        cmd = "bench/transfer.py" + (" --quick" if quick else "")
        up_ratio = up["shelfsync_MBps"] / up["nginx_MBps"]
        dl_ratio = dl["shelfsync_MBps"] / dl["nginx_MBps"]
        rg_ratio = rg["shelfsync_per_s"] / rg["nginx_per_s"]
        up_t = f">= {goal.get('upload_ratio', 1.0)}"
        dl_t = f">= {goal.get('download_ratio', 0.5)}"
        rg_t = f">= {goal.get('ranges_ratio', 0.5)}"
        limit = float(goal.get("peak_rss_mib", 150))
        rows += [
            {
                "goal": 3,
                "label": server,
                "anchor": f"nginx PUT {_f(up['nginx_MBps'], 0)} MB/s",
                "shelfsync": f"{_f(up['shelfsync_MBps'], 0)} MB/s",
                "ratio": up_ratio,
                "target": up_t,
                "met": judge(up_ratio, up_t),
                "comparable": not quick,
                "command": cmd,
            },
            {
                "goal": 4,
                "label": f"{server}, full",
                "anchor": f"nginx {_f(dl['nginx_MBps'], 0)} MB/s",
                "shelfsync": f"{_f(dl['shelfsync_MBps'], 0)} MB/s",
                "ratio": dl_ratio,
                "target": dl_t,
                "met": judge(dl_ratio, dl_t),
                "comparable": not quick,
                "command": cmd,
            },
            {
                "goal": 4,
                "label": f"{server}, {rg.get('count', '')} ranges",
                "anchor": f"nginx {_f(rg['nginx_per_s'], 0)} req/s",
                "shelfsync": f"{_f(rg['shelfsync_per_s'], 0)} req/s",
                "ratio": rg_ratio,
                "target": rg_t,
                "met": judge(rg_ratio, rg_t),
                "comparable": not quick,
                "command": cmd,
            },
            {
                "goal": 7,
                "label": server,
                "anchor": f"limit {limit:.0f} MiB",
                "shelfsync": f"peak {_f(mem['peak_rss_mib'], 1)} MiB",
                "ratio": mem["peak_rss_mib"] / limit,
                "target": "<= 1.0",
                "met": mem["peak_rss_mib"] < limit,
                "comparable": not quick,
                "command": cmd,
            },
        ]
    return rows


def adapt_feed_report(data: Json) -> list[Json]:
    """bench/feed_report.py without a `goals` list: {"results": {backend: {feed, report}}}."""
    rows: list[Json] = []
    quick = bool(data.get("quick"))
    goal = data.get("goal", {})
    p50_goal = float(goal.get("p50_ms", 25))
    ratio_goal = float(goal.get("ratio", 1.5))
    ingest_goal = float(goal.get("ingest_per_s", 10_000))
    for backend, result in data.get("results", {}).items():
        feed = result["feed"]
        worst = max(feed.values(), key=lambda f: f["ratio"])
        p50s = "/".join(_f(f["big_p50_ms"], 1) for f in feed.values())
        small = "/".join(_f(f["small_p50_ms"], 1) for f in feed.values())
        cmd = f"bench/feed_report.py --backend {backend}" + (" --quick" if quick else "")
        rows.append(
            {
                "goal": 5,
                "label": f"{backend} feed {'/'.join(feed)}",
                "anchor": f"10k-item library p50 {small} ms",
                "shelfsync": f"{result['items']:,} items: p50 {p50s} ms",
                "ratio": worst["ratio"],
                "target": f"<= {ratio_goal}",
                "met": all(
                    f["ratio"] <= ratio_goal and f["big_p50_ms"] <= p50_goal for f in feed.values()
                ),
                "comparable": not quick,
                "command": cmd,
            }
        )
        rate = result["report"]["big"]["changes_per_s"]
        floor = result["report"].get("floor", {}).get("changes_per_s")
        rows.append(
            {
                "goal": 5,
                "label": f"{backend} ingest",
                "anchor": f"goal {ingest_goal:,.0f}/s"
                + (f"; bulk-insert floor {floor:,.0f}/s" if floor else ""),
                "shelfsync": f"{rate:,.0f} changes/s",
                "ratio": rate / ingest_goal,
                "target": ">= 1.0",
                "met": rate >= ingest_goal,
                "comparable": not quick,
                "command": cmd,
            }
        )
    return rows


ADAPTERS: dict[str, Callable[[Json], list[Json]]] = {
    "transfer": adapt_transfer,
    "feed_report": adapt_feed_report,
}


def goal_rows(entries: dict[str, Json]) -> tuple[dict[int, list[Json]], list[str]]:
    by_goal: dict[int, list[Json]] = {g: [] for g in GOALS}
    problems: list[str] = []
    for name, entry in entries.items():
        data = entry.get("result")
        if not isinstance(data, dict):
            continue
        rows = data.get("goals")
        if rows is None and name in ADAPTERS:
            try:
                rows = ADAPTERS[name](data)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                problems.append(f"{name}: JSON not understood ({exc!r}); give it a `goals` list")
                continue
        if not isinstance(rows, list):
            problems.append(f"{name}: its JSON has no `goals` list (schema: bench/_common.py)")
            continue
        for row in rows:
            if isinstance(row, dict) and row.get("goal") in by_goal:
                by_goal[int(row["goal"])].append(row)
    return by_goal, problems


def ratio_cell(row: Json) -> str:
    ratio = row.get("ratio")
    if ratio is None:
        return "n/a"
    text = f"**{ratio:.2f}**"
    if not row.get("comparable", True):
        return f"{text} (quick)"
    met = row.get("met")
    if met is None:
        return text
    if met:
        return f"{text} met"
    target = row.get("target", "")
    op, _, value = target.partition(" ")
    try:
        limit = float(value)
        factor = ratio / limit if op == "<=" else limit / ratio
        return f"{text} not met ({factor:.1f}x off)"
    except (ValueError, ZeroDivisionError):
        return f"{text} not met"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(entries: dict[str, Json], quick: bool) -> str:
    by_goal, problems = goal_rows(entries)
    lines = [
        "| goal | anchor | shelfsync | ratio | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    for number, (what, target, script) in GOALS.items():
        rows = by_goal[number]
        goal_cell = f"{number}. {what}; goal: {target}"
        if not rows:
            entry = entries.get(script, {})
            if entry.get("status") == "missing":
                why = f"not measured (bench/{script}.py does not exist yet)"
            elif isinstance(entry.get("result"), dict):
                why = f"not measured (not in this run of `{script}`)"
            elif entry:
                why = f"not measured (`{script}`: {entry.get('status')})"
            else:
                why = "not measured"
            lines.append(f"| {_cell(goal_cell)} | {why} | - | - | `make bench` (`{script}`) |")
            continue

        def joined(key: str, rows: list[Json] = rows) -> str:
            parts = []
            for row in rows:
                label = f"{row['label']}: " if row.get("label") and len(rows) > 1 else ""
                value = ratio_cell(row) if key == "ratio" else str(row.get(key, ""))
                parts.append(_cell(label + value))
            return "<br>".join(parts)

        commands = sorted({str(r.get("command", script)) for r in rows})
        lines.append(
            f"| {_cell(goal_cell)} | {joined('anchor')} | {joined('shelfsync')} | "
            f"{joined('ratio')} | {'<br>'.join(f'`{c}`' for c in commands)} |"
        )
    notes = []
    if quick:
        notes.append(
            "**QUICK run** (`make bench QUICK=1`): smaller inputs, one run each; "
            "not comparable with the goals."
        )
    for name, entry in entries.items():
        data = entry.get("result") or {}
        host = data.get("host") or {}
        when = data.get("started") or ""
        load = host.get("loadavg")
        extra = f", load average at start {load[0]:.1f}" if load else ""
        if fs := data.get("filesystem"):
            extra += f", on {fs['kind']} ({fs['type']} {fs['options']})"
        took = f", {entry['seconds']} s" if "seconds" in entry else ""
        if data:
            note = f"; {data['note']}" if data.get("note") else ""
            notes.append(f"`{name}`: measured {when}{took}{extra}{note}")
    notes += problems
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"


def update_doc(doc: Path, table: str) -> None:
    text = doc.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{doc}: markers {START} ... {END} not found")
    doc.write_text(text[: start + len(START)] + "\n" + table + text[end:])


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("scripts", nargs="*", default=SCRIPTS, help=f"default: {' '.join(SCRIPTS)}")
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script")
    ap.add_argument("--out", help="raw JSON and logs (default /tmp/shelfsync-bench[-quick])")
    ap.add_argument("--no-run", action="store_true", help="only rebuild from the JSON in --out")
    ap.add_argument("--update-docs", action="store_true", help="also with --quick")
    ap.add_argument("--no-docs", action="store_true", help="never touch docs/")
    ap.add_argument("--timeout", type=float, help="seconds per script before SIGINT")
    args = ap.parse_args()
    out = Path(args.out or f"/tmp/shelfsync-bench{'-quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    started = now_iso()
    t0 = time.monotonic()
    entries: dict[str, Json] = {}
    try:
        for name in args.scripts:
            if args.no_run:
                path = out / f"{name}.json"
                entry: Json = {"script": name, "json_path": str(path)}
                if path.exists():
                    entry["result"] = json.loads(path.read_text())
                    entry["status"] = "ok (from an earlier run)"
                else:
                    entry["status"] = "no JSON"
                entries[name] = entry
            else:
                entries[name] = run_script(name, out, args.quick, args.timeout)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t0
    results: Json = {
        "schema": 1,
        "quick": args.quick,
        "started": started,
        "finished": now_iso(),
        "seconds": round(elapsed, 1),
        "host": host_info(),
        "scripts": entries,
    }
    write_json(out / "results.json", results)
    table = render_table(entries, args.quick)
    print("\n" + table)
    print(f"results: {out / 'results.json'}")
    # docs/ is rewritten by full runs, or when asked (--update-docs; the only way with --no-run)
    update = args.update_docs or not (args.quick or args.no_run)
    if update and not args.no_docs:
        DOC_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "results.json", DOC_RESULTS)
        update_doc(DOC, table)
        print(f"updated: {DOC.relative_to(REPO)} (table), {DOC_RESULTS.relative_to(REPO)}")
    if args.quick and not args.no_run:
        verdict = "within" if elapsed <= QUICK_BUDGET_S else "OVER"
        print(f"quick run: {elapsed:.0f} s ({verdict} the {QUICK_BUDGET_S} s budget)")
    failed = [n for n, e in entries.items() if e.get("exit") not in (0, None)]
    return 1 if failed and os.environ.get("BENCH_STRICT") else 0


if __name__ == "__main__":
    sys.exit(main())
