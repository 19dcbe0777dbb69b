"""A/B benchmark: two installations of store-migrate on the same stores, alternating.

    python bench/ab.py A_BIN B_BIN [--reps 6] [--only verify,rerun] [--codex-mb 200] ...
    python bench/ab.py ../../old/.venv/bin ../.venv/bin --reps 6

A_BIN and B_BIN are the `bin` directories of two virtual environments (say the old code's and
this one's). Each repetition runs bench.py's sequence (floor, run, rerun, verify, ...) for A and
for B, in turns (A then B, then B then A, ...), so a machine whose speed drifts slows both alike.
For each operation it prints the median wall time and CPU time (user + system of the process and
all its workers) of each side and B's change against A. On a shared machine the CPU figure is
the steadier one. An operation a side's tool does not have (`verify --additive` before #14) is
left out for that side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import bench


def _operations(bin_dir: Path, wanted: list[str]) -> list[str]:
    usage = subprocess.run([str(bin_dir / "store-migrate"), "verify", "--help"], capture_output=True, text=True,
                           check=True).stdout
    return [op for op in wanted if op != "verify_additive" or "--additive" in usage]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="bin directory of the first installation (the baseline)")
    parser.add_argument("b", type=Path, help="bin directory of the second installation")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--only", default=",".join(bench.OPERATIONS),
                        help=f"operations to measure besides the first run (of {','.join(bench.OPERATIONS)})")
    parser.add_argument("--codex-mb", type=float, default=200)
    parser.add_argument("--auth-mb", type=float, default=50)
    parser.add_argument("--domain-mb", type=float, default=50)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "store-migrate-bench"))
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="no bytecode cache when the environment says so (PYTHONDONTWRITEBYTECODE)")
    parser.add_argument("--out", help="also write every sample as JSON here")
    args = parser.parse_args()

    template = bench.stores_template(args.cache, args.codex_mb, args.auth_mb, args.domain_mb)
    wanted = [op for op in args.only.split(",") if op]
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}
    operations = {side: _operations(bin_dir, wanted) for side, bin_dir in sides.items()}
    bench.adopt_orphans()
    bench.use_bytecode_cache(None if args.no_bytecode_cache else args.cache, list(sides.values()))
    samples: dict[str, dict[str, list[bench.Sample]]] = {"A": {}, "B": {}}
    loads = []
    for rep in range(args.reps):
        for side in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            bench.repetition(template, sides[side], operations[side],
                             lambda label, sample, side=side: samples[side].setdefault(label, []).append(sample))
        loads.append(os.getloadavg()[0])
        print(f"repetition {rep + 1}/{args.reps} done (load {loads[-1]:.2f})", flush=True)

    print(f"\nA: {sides['A']}\nB: {sides['B']}\nmedian of {args.reps}, alternating; bytecode "
          f"{'cached in ' + str(bench.BYTECODE[0]) if bench.BYTECODE else 'as the environment says'}; "
          f"1-minute load after each repetition: {', '.join(f'{x:.1f}' for x in loads)}")
    print(f"{'operation':<30} {'A wall':>7} {'B wall':>7} {'change':>7}   {'A CPU':>6} {'B CPU':>6} {'change':>7}"
          f"   {'A MB':>6} {'B MB':>6}")
    for label in samples["B"]:
        a, b = samples["A"].get(label), samples["B"][label]

        def med(values: list[bench.Sample] | None, what: str) -> float | None:
            return None if not values else statistics.median(getattr(s, what) for s in values)

        def show(value: float | None, width: int, digits: int = 2) -> str:
            return f"{'':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        def change(before: float | None, after: float | None) -> str:
            return f"{'':>7}" if before is None or after is None else f"{(after / before - 1) * 100:>+6.1f}%"

        aw, bw, ac, bc = med(a, "wall"), med(b, "wall"), med(a, "cpu"), med(b, "cpu")
        print(f"{label:<30} {show(aw, 7)} {show(bw, 7)} {change(aw, bw)}   {show(ac, 6)} {show(bc, 6)} "
              f"{change(ac, bc)}   {show(med(a, 'peak_mb'), 6, 0)} {show(med(b, 'peak_mb'), 6, 0)}")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"a": str(sides["A"]), "b": str(sides["B"]), "loads": loads,
             "samples": {side: {label: [vars(s) for s in values] for label, values in by_label.items()}
                         for side, by_label in samples.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
