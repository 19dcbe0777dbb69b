"""Benchmark store-migrate on generated stores: wall time and peak memory of each operation.

    python bench/bench.py [--codex-mb 200] [--auth-mb 50] [--domain-mb 50] [--reps 3]
                          [--out bench-results/latest.json]

Each operation runs as a separate process on fresh copies of the stores; the figure is the
median over the repetitions. CPU is the user and system time of the process and every process
it started (workers included, also those still exiting when it exits: this process adopts them
as a subreaper), a figure the other load of a shared machine disturbs far less than the wall
time. Peak memory is the largest total resident set (RSS, from
/proc/<pid>/statm) of the process and all its children, sampled every 20 ms: work spread over
worker processes is counted in full, and pages they still share with their parent twice (so it
errs high). Its ratio is to the largest store file present when the operation starts (before a
run, after it for verify and rollback).
The floor is reading, hashing (sha256) and writing the same bytes with an fsync.

Python's compiled bytecode is cached (in the cache directory, PYTHONPYCACHEPREFIX, never beside
the sources) as it is for an installed wheel, whatever PYTHONDONTWRITEBYTECODE says: otherwise
every step compiles the package's sources first, which measures the size of the source, not
the tool (about 0.1 CPU-seconds per command here). `--no-bytecode-cache` measures that too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import generate

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TARGETS = {"run": 4.0, "rerun": 1.5, "verify": 2.5, "verify_strict": 3.5, "verify_additive": 4.0, "rollback": 2.5}
FLOOR = """
import hashlib, os, sys
out = sys.argv[1]
for source in sys.argv[2:]:
    data = open(source, "rb").read()
    hashlib.sha256(data).hexdigest()
    fd = os.open(os.path.join(out, os.path.basename(source) + ".floor"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
"""
"""Read, hash and write (fsynced) the generated input stores: always the same 300 MB, whichever
step it is measured before."""


def _tree_memory_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB, from /proc/<pid>/statm (kept
    as counters by the kernel: reading it costs the measured process nothing, where smaps_rollup
    walks its page tables under its memory lock and slowed a run by 0.2-0.5 s). Pages a forked
    worker still shares with its parent count twice, so this errs on the high side (by about
    the parent's 50 MB per worker)."""
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * page_kb
            with open(f"/proc/{current}/task/{current}/children") as children:
                stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Become the subreaper of every process started from here: a worker still exiting when its
    parent exits is then this process's to reap, and its CPU time is counted (`measure`)."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, peak MB of the process tree, CPU seconds of the process tree) of one
    command; it must exit 0. Dirty pages left by earlier steps are written out first, so no step
    pays for another's writes. Call `adopt_orphans` once first."""
    os.sync()
    cpu_before = _children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_memory_kb(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stderr = process.communicate()[1].decode()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    while True:  # workers that outlived the command (adopted): their CPU time counts too
        try:
            os.wait()
        except ChildProcessError:
            break
    cpu = _children_cpu() - cpu_before
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-2000:]}")
    return wall, peak / 1024, cpu


BYTECODE: list[Path] = []
"""Where compiled bytecode is cached for the measured commands (empty: not cached, if the
environment says so); set by `use_bytecode_cache`."""


def use_bytecode_cache(cache: str | None, bin_dirs: Sequence[Path] = ()) -> None:
    """Cache compiled bytecode under `cache` for every measured command (None: as the
    environment says), and compile the store_migrate package of each bin directory now."""
    BYTECODE.clear()
    if cache is None:
        return
    BYTECODE.append(Path(cache) / "pycache")
    for bin_dir in bin_dirs:  # every module of the package imported once: it and what it imports compiled
        subprocess.run([str(bin_dir / "python"), "-c", _IMPORT_ALL], env=_environment(Path(cache)), check=True)


_IMPORT_ALL = """
import importlib, pkgutil, jsonschema, store_migrate
for module in pkgutil.iter_modules(store_migrate.__path__):
    importlib.import_module("store_migrate." + module.name)
"""


def _environment(work: Path) -> dict[str, str]:
    env = {**os.environ, "WORK_DIR": str(work / "work"), "STORE_MIGRATE_LOG_FORMAT": "json"}
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BYTECODE[0])
    env.update({f"{var}_STORE_PATH": str(work / name) for var, name in
                (("AUTH", generate.FILES["auth"]), ("CODEX_THREAD", generate.FILES["codex_threads"]),
                 ("DOMAIN", generate.FILES["domain"]))})
    return env


def profile(template: Path, sizes: dict[str, int], svg: str) -> None:
    """One first run under py-spy, workers and threads included, as a flame graph."""
    work = Path(tempfile.mkdtemp(prefix="store-migrate-profile-"))
    try:
        for name in sizes:
            shutil.copyfile(template / name, work / name)
        os.sync()
        done = subprocess.run([str(BIN / "py-spy"), "record", "--subprocesses", "--rate", "250", "--output",
                               os.path.abspath(svg), "--", str(BIN / "store-migrate"), "run"],
                              env=_environment(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"py-spy exited {done.returncode}:\n{done.stderr[-2000:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"profile written to {svg}")


OPERATIONS = ("run", "rerun", "verify", "verify_strict", "verify_additive", "rollback", "help")
"""What a repetition measures, in this order (`help`: the four entry points' --help)."""


@dataclass(frozen=True)
class Sample:
    wall: float
    peak_mb: float
    cpu: float
    largest: int
    """The largest store file present when the step started, in bytes."""


def stores_template(cache: str, codex_mb: float, auth_mb: float, domain_mb: float) -> Path:
    """The directory of generated input stores of these sizes, generated the first time."""
    template = Path(cache) / f"stores-{codex_mb:g}-{auth_mb:g}-{domain_mb:g}"
    if not template.exists():
        print(f"generating stores in {template} ...", flush=True)
        partial = template.with_suffix(".partial")
        subprocess.run([sys.executable, str(HERE / "generate.py"), str(partial), "--codex-mb", str(codex_mb),
                        "--auth-mb", str(auth_mb), "--domain-mb", str(domain_mb)], check=True)
        partial.rename(template)
    return template


def repetition(template: Path, bin_dir: Path, operations: Sequence[str], record: Callable[[str, Sample], None]) -> None:
    """One repetition on fresh copies of the stores: the floor, a first run, then each other
    operation with the floor measured before it, with the store-migrate of `bin_dir`."""
    names = list(generate.FILES.values())
    work = Path(tempfile.mkdtemp(prefix="store-migrate-bench-"))
    try:
        for name in names:
            shutil.copyfile(template / name, work / name)
        env = _environment(work)
        tool = str(bin_dir / "store-migrate")
        floor = [sys.executable, "-c", FLOOR, str(work), *(str(template / n) for n in names)]

        def step(label: str, command: list[str]) -> None:
            largest_now = max((work / name).stat().st_size for name in names)
            record(label, Sample(*measure(command, env), largest_now))

        # The floor is measured before every operation (this machine's I/O and CPU vary from
        # minute to minute); each ratio is to the median of all of them.
        step("floor", floor)
        step("run", [tool, "run"])
        first = sorted((work / "work" / "manifests").glob("*.json"))[-1]
        for label, command in (
            ("rerun", [tool, "run"]),
            ("verify", [tool, "verify", str(first)]),
            ("verify_strict", [tool, "verify", "--strict", str(first)]),
            ("verify_additive", [tool, "verify", "--additive", str(first)]),
            ("rollback", [tool, "rollback", str(first)]),
        ):
            if label in operations:
                step("floor", floor)
                step(label, command)
        if "help" in operations:
            for entry in ("store-migrate", "store-migrate-backfill", "store-migrate-verify", "store-migrate-rollback"):
                step(f"help:{entry}", [str(bin_dir / entry), "--help"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codex-mb", type=float, default=200)
    parser.add_argument("--auth-mb", type=float, default=50)
    parser.add_argument("--domain-mb", type=float, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(HERE.parent / "bench-results" / "latest.json"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "store-migrate-bench"))
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="no bytecode cache when the environment says so (PYTHONDONTWRITEBYTECODE)")
    parser.add_argument("--profile", metavar="SVG",
                        help="instead of timing: record one first run with py-spy (all processes) into SVG")
    args = parser.parse_args()

    template = stores_template(args.cache, args.codex_mb, args.auth_mb, args.domain_mb)
    sizes = {name: (template / name).stat().st_size for name in generate.FILES.values()}
    if args.profile:
        profile(template, sizes, args.profile)
        return

    adopt_orphans()
    use_bytecode_cache(None if args.no_bytecode_cache else args.cache, [BIN])
    samples: dict[str, list[Sample]] = {}
    for rep in range(args.reps):
        repetition(template, BIN, OPERATIONS, lambda label, sample: samples.setdefault(label, []).append(sample))
        print(f"repetition {rep + 1}/{args.reps} done", flush=True)

    floor = statistics.median(s.wall for s in samples["floor"])
    results = {}
    for label, values in samples.items():
        wall = statistics.median(s.wall for s in values)
        peak = statistics.median(s.peak_mb for s in values)
        largest = max(s.largest for s in values)
        results[label] = {"wall_s": round(wall, 3), "ratio_to_floor": round(wall / floor, 2),
                          "samples_s": [round(s.wall, 3) for s in values],
                          "cpu_s": round(statistics.median(s.cpu for s in values), 3),
                          "cpu_samples_s": [round(s.cpu, 3) for s in values],
                          "peak_mb": round(peak, 1), "largest_store_mb": round(largest / 2**20, 1),
                          "peak_ratio_to_largest_store": round(peak * 2**20 / largest, 2),
                          "target_ratio": TARGETS.get(label, 0.25 if label.startswith("help:") else None)}
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "stores_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "reps": args.reps, "floor_s": round(floor, 3), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nstores: {', '.join(f'{k} {v / 1e6:.0f} MB' for k, v in sizes.items())}; "
          f"median of {args.reps}; floor {floor:.2f} s")
    print(f"{'operation':<30} {'wall s':>8} {'x floor':>8} {'target':>8} {'CPU s':>7} {'peak MB':>9} "
          f"{'x largest':>10}  (target: peak <= 5.5x the largest store)")
    for label, r in results.items():
        target = r["target_ratio"]
        shown = "" if target is None else (f"<= {target:g}s" if label.startswith("help:") else f"<= {target:g}x")
        print(f"{label:<30} {r['wall_s']:>8.2f} {r['ratio_to_floor']:>8.2f} {shown:>8} {r['cpu_s']:>7.2f} "
              f"{r['peak_mb']:>9.0f} {r['peak_ratio_to_largest_store']:>10.2f}")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
