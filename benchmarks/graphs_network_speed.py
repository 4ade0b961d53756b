"""GDSS networks on the released weights: the packed fast path against the direct form.

For each dataset: convert the released checkpoint, draw random (not sampled) node features,
symmetric adjacencies and masks at ``max_nodes`` (``random_inputs``), and time the network that
samples (EMA where the checkpoint says so) with the packed fast path (``fast=True``, the default)
and the direct form (``fast=False``), alternating, best of ``--repeats`` in thread CPU time, in one
process. Checks that both agree with each other and with GDSS's forward pass re-derived on the
raw weights (``reference_outputs``).

    DOMAINDIFF_THREADS=1 python benchmarks/graphs_network_speed.py --gdss-dir DIR \\
        --datasets grid ENZYMES --batch 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs")]  # runs uninstalled too

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.gdss_import import (  # noqa: E402
    RELEASED_CHECKPOINTS,
    convert,
    random_inputs,
    read_gdss_checkpoint,
    reference_outputs,
)

CKPT = RELEASED_CHECKPOINTS  # name -> path under the authors' checkpoints/ folder


def _set_fast(net: torch.nn.Module, fast: bool) -> None:
    for sub in (net.net_x, net.net_adj):
        if hasattr(sub, "fast"):
            sub.fast = fast


def measure(gdss_dir: Path, name: str, batch: int, repeats: int) -> dict:
    """Times and output differences of one dataset's networks at one batch size."""
    src = gdss_dir / "checkpoints" / CKPT[name]
    raw = read_gdss_checkpoint(src)
    model = convert(raw, src)
    net = model.ema_network.module if model.sample_ema else model.network
    inp = random_inputs(model, batch=batch, seed=1)
    t = torch.full((batch,), 0.3)
    best = {True: float("inf"), False: float("inf")}
    outs = {}
    with torch.no_grad():
        net(inp, t)  # warm-up
        for _ in range(repeats):
            for fast in (False, True):
                _set_fast(net, fast)
                c0 = time.thread_time()
                outs[fast] = net(inp, t)
                best[fast] = min(best[fast], time.thread_time() - c0)
        _set_fast(net, True)
        ref = reference_outputs(raw, inp["x"], inp["adj"], inp["mask"],
                                "ema" if model.sample_ema else "raw")
    diff = {k: float((outs[True][k] - outs[False][k]).abs().max()) for k in ("x", "adj")}
    dref = {k: float((outs[True][k] - ref[k]).abs().max()) for k in ("x", "adj")}
    row = {"dataset": name, "batch": batch, "nodes": int(inp["adj"].shape[-1]),
           "direct_cpu_s": best[False], "packed_cpu_s": best[True],
           "speedup": best[False] / best[True], "max_abs_diff_packed_vs_direct": diff,
           "max_abs_diff_packed_vs_gdss_formulas": dref}
    print(f"{name} batch {batch} ({row['nodes']} nodes): direct {best[False]:.3f} s, packed "
          f"{best[True]:.3f} s, speed-up {row['speedup']:.2f}x; max diff vs direct {diff}, "
          f"vs GDSS formulas {dref}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True,
                    help="a copy of the GDSS authors' files (checkpoints/)")
    ap.add_argument("--datasets", nargs="+", default=["grid", "ENZYMES"], choices=sorted(CKPT))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "graphs_network_speed_cpu.json")
    args = ap.parse_args(argv)
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    rows = [measure(args.gdss_dir, name, b, args.repeats) for name in args.datasets
            for b in args.batch]
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared host",
              "load_average_at_end": os.getloadavg()[0], "torch": torch.__version__,
              "timing": "best of --repeats, thread CPU time, direct and packed alternating",
              "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
