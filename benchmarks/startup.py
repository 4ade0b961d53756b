"""Cold start of the ``domaindiff`` command against bare ``import torch`` / ``import lightning``.

Each command runs in a fresh interpreter (nothing cached in the process; the OS file cache is
warm after the first round), ``--repeats`` times, the commands interleaved round by round so that
load on a shared machine hits all of them alike. Prints the median and minimum wall time of each,
its ratio to ``import lightning`` and to ``domaindiff --help``, and writes JSON.

Rows: ``python -c pass`` (the interpreter), ``import torch``, ``import lightning``,
``domaindiff --help``, ``domaindiff configs``, ``domaindiff plugins`` (imports every plugin),
``domaindiff fit --config toy:demo --print_config`` (imports torch, Lightning and the toy plugin
only), and the same ``fit`` after importing every plugin first, as ``fit`` did before plugins
were imported lazily.

    DOMAINDIFF_THREADS=1 python benchmarks/startup.py [--repeats 5] [--out benchmarks/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _domaindiff() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m domaindiff.cli``."""
    script = Path(sys.executable).with_name("domaindiff")
    if script.is_file():
        return [str(script)]
    found = shutil.which("domaindiff")
    return [found] if found else [sys.executable, "-m", "domaindiff.cli"]


def commands() -> dict[str, list[str]]:
    """``{label: argv}`` of the timed commands, in table order."""
    py, dd = sys.executable, _domaindiff()
    return {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import torch'": [py, "-c", "import torch"],
        "python -c 'import lightning'": [py, "-c", "import lightning"],
        "domaindiff --help": [*dd, "--help"],
        "domaindiff configs": [*dd, "configs"],
        "domaindiff plugins": [*dd, "plugins"],
        "domaindiff fit --config toy:demo --print_config": [
            *dd, "fit", "--config", "toy:demo", "--print_config"],
        "same fit, every plugin imported first (as before)": [
            py, "-c", "import sys, domaindiff.plugins as p; p.discover(); "
                      "from domaindiff.cli import main; "
                      "sys.exit(main(['fit', '--config', 'toy:demo', '--print_config']))"],
    }


def _time(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        raise SystemExit(f"error: {' '.join(argv)} exited {res.returncode}: {tail[0]}")
    return elapsed


def measure(repeats: int) -> dict[str, list[float]]:
    """Wall seconds of every command, ``repeats`` rounds, each in a fresh process."""
    cmds = commands()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.setdefault("DOMAINDIFF_THREADS", "1")
    times: dict[str, list[float]] = {label: [] for label in cmds}
    with tempfile.TemporaryDirectory() as cwd:  # not the checkout: as a pip user runs it
        for argv in cmds.values():  # warm the OS file cache (not timed)
            _time(argv, cwd, env)
        for i in range(repeats):
            for label, argv in cmds.items():
                times[label].append(_time(argv, cwd, env))
            print(f"round {i + 1}/{repeats} done", file=sys.stderr)
    return times


def table(times: dict[str, list[float]]) -> list[dict[str, float | str]]:
    """Rows with the median, minimum and ratios to ``import lightning`` and ``--help``."""
    lightning = statistics.median(times["python -c 'import lightning'"])
    helps = statistics.median(times["domaindiff --help"])
    return [{"command": label, "median_s": statistics.median(t), "min_s": min(t),
             "x_import_lightning": statistics.median(t) / lightning,
             "x_help": statistics.median(t) / helps, "runs_s": t} for label, t in times.items()]


def main() -> None:
    """Time every command, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/startup.json"))
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    rows = table(measure(args.repeats))
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':{width}s} {'median s':>9} {'min s':>7} {'x lightning':>12} {'x --help':>9}")
    for r in rows:
        print(f"{r['command']:{width}s} {r['median_s']:9.2f} {r['min_s']:7.2f} "
              f"{r['x_import_lightning']:12.2f} {r['x_help']:9.1f}")
    import torch

    from domaindiff.data import atomic_write_text

    result = {
        "benchmark": "cold start (fresh process per run), median of repeats",
        "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__,
                    "DOMAINDIFF_THREADS": os.environ.get("DOMAINDIFF_THREADS", "1"),
                    "load_average_1_5_15_at_end": list(os.getloadavg())},
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
