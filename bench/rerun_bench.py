"""A rerun that has nothing to do, timed as a person meets it: `cvae run` (a process of its own, starting its own
local Ray) on a table, then the same command again, then `cvae generate` and `cvae evaluate` again alone. Each
rerun is printed beside the first run and beside the first-hour target (30 s with Ray's start, 10 s without).

    python bench/rerun_bench.py [--table adult] [--epochs 2]

Prints a table; nothing here is a test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.config import BUNDLED_DATA  # noqa: E402

CONDITIONS = {"adult": "[income]", "strings/peeps": "[country]", "nuclides": "[is_stable]"}


def timed(command: str, flags: list[str], folder: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", command, *flags], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1", "RAY_AUTH_MODE": "disabled"})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"cvae {command} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="adult", choices=sorted(CONDITIONS))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        flags = sum([["--set", item] for item in [
            f"data.path={BUNDLED_DATA / (args.table + '.parquet')}", f"data.conditions={CONDITIONS[args.table]}",
            f"train.epochs={args.epochs}", "train.num_workers=1", "generate.num_rows=10000"]], [])
        first, _ = timed("run", flags, Path(folder))
        rows = [("cvae run (first)", first, None, "")]
        for command, target in (("run", 30), ("generate", 10), ("evaluate", 10)):
            seconds, said = timed(command, flags, Path(folder))
            noticed = [line for line in said.splitlines()
                       if "nothing to" in line or "evaluated before" in line or "already holds" in line]
            rows.append((f"cvae {command} (rerun)", seconds, target, "; ".join(line[:60] for line in noticed)))
    print(f"table {args.table}, {args.epochs} epochs, 10,000 rows generated; machine: {os.cpu_count()} CPUs")
    print(f"{'command':<24}{'seconds':>9}{'target':>8}{'vs first run':>14}  what it said")
    for name, seconds, target, said in rows:
        print(f"{name:<24}{seconds:>9.1f}{(f'{target} s' if target else '-'):>8}{seconds / first:>13.0%}  {said}")


if __name__ == "__main__":
    main()
