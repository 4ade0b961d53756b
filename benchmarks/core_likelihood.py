"""Exact probability-flow likelihood: batched against one-at-a-time divergence, in one run.

The exact divergence needs one vector-Jacobian product per coordinate. ``log_likelihood``
batches ``chunk`` of them into one backward pass (``is_grads_batched``); ``chunk=1`` is the
one-product-per-pass loop. For an MLP denoiser (eps prediction, VP SDE) on data of dimension D,
this prints and writes the wall time of both, their ratio and the largest difference in log p
(which must be round-off).

    python benchmarks/core_likelihood.py [--dims 8,32,128] [--out benchmarks/results/core_likelihood.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from domaindiff.data import atomic_write_text
from domaindiff.likelihood import log_likelihood
from domaindiff.processes import VP


class MLPDenoiser(nn.Module):
    """A small time-conditioned MLP predicting the noise."""

    parametrization = "eps"

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, state: dict, t: torch.Tensor) -> dict:
        """``{"x": eps}`` for state ``{"x": (B, D)}`` at time ``t``."""
        x = state["x"]
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return {"x": self.net(torch.cat([x, tt], 1))}


def main() -> None:
    """Time both divergence paths for each dimension, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="8,32,128")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/core_likelihood.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'D':>5} {'NFE':>5} {'loop s':>8} {'batched s':>10} {'loop/batched':>13} {'max |dlogp|':>12}")
    for dim in (int(d) for d in args.dims.split(",")):
        torch.manual_seed(0)
        net = MLPDenoiser(dim).eval()
        x = torch.randn(args.batch, dim)
        res = {}
        for chunk in (1, args.chunk):
            start = time.perf_counter()
            out = log_likelihood(net, VP(), x, exact=True, rtol=1e-4, atol=1e-4, chunk=chunk)
            res[chunk] = (time.perf_counter() - start, out)
        (t_loop, a), (t_batch, b) = res[1], res[args.chunk]
        row = {"dim": dim, "nfe": a["nfe"], "loop_s": t_loop, "batched_s": t_batch,
               "ratio": t_loop / t_batch,
               "max_abs_logp_diff": float((a["logp"] - b["logp"]).abs().max())}
        rows.append(row)
        print(f"{dim:>5} {row['nfe']:>5} {t_loop:>8.2f} {t_batch:>10.2f} {row['ratio']:>13.1f} "
              f"{row['max_abs_logp_diff']:>12.2e}")
    result = {"machine": platform.machine(), "processor": platform.processor(),
              "threads": args.threads, "batch": args.batch, "chunk": args.chunk,
              "torch": torch.__version__, "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
