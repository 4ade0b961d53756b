"""Probability-flow likelihood: exact divergence batched vs looped, and Hutchinson's probes.

The exact divergence needs one vector-Jacobian product per coordinate. ``log_likelihood``
batches ``chunk`` of them into one backward pass (``is_grads_batched``); ``chunk=1`` is the
one-product-per-pass loop. For an MLP denoiser (eps prediction, VP SDE) on data of dimension D,
this prints and writes the wall time of both, their ratio and the largest difference in log p
(which must be round-off).

Then Hutchinson's estimator against the exact log-likelihood on Gaussian mixtures with the exact
denoiser (VP SDE; the 2-D two-component mixture of the tests and a 4-component 16-D one): for
Gaussian and Rademacher probes and 1 or 4 probes per evaluation, the mean relative error
``|logp_hutch - logp_exact| / |logp_exact|`` and its RMS over ``--seeds`` probe seeds and
``--points`` data points.

    python benchmarks/core_likelihood.py [--dims 8,32,128] [--seeds 10] [--points 16]
        [--out benchmarks/results/core_likelihood.json]
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
from domaindiff.toy.data import make_mixture
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture


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


def hutchinson_rows(seeds: int, points: int) -> list[dict]:
    """Relative error of Hutchinson's log-likelihood against the exact one, per probe kind."""
    torch.set_default_dtype(torch.float64)
    try:
        mixtures = {
            "2-D, 2 components": GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                                                 torch.tensor([0.3, 0.5])),
            "16-D, 4 components": make_mixture("random", dim=16, seed=0),
        }
        rows = []
        proc = VP()
        tol = {"rtol": 1e-4, "atol": 1e-4}
        for label, mix in mixtures.items():
            den = ExactDenoiser(mix, proc)
            x = mix.sample(points, torch.Generator().manual_seed(0), torch.float64)
            exact = log_likelihood(den, proc, x, exact=True, **tol)["logp"]
            for n_probes in (1, 4):
                for probe in ("gaussian", "rademacher"):
                    start = time.perf_counter()
                    rel = torch.stack([
                        (log_likelihood(den, proc, x, exact=False, probe=probe,
                                        hutchinson_samples=n_probes,
                                        generator=torch.Generator().manual_seed(s),
                                        **tol)["logp"] - exact).abs() / exact.abs()
                        for s in range(seeds)])
                    rows.append({"mixture": label, "dim": mix.dim, "probe": probe,
                                 "probes_per_eval": n_probes, "seeds": seeds, "points": points,
                                 "mean_rel_err": float(rel.mean()),
                                 "rms_rel_err": float((rel**2).mean().sqrt()),
                                 "seconds": time.perf_counter() - start})
        return rows
    finally:
        torch.set_default_dtype(torch.float32)


def main() -> None:
    """Time both divergence paths for each dimension, then Hutchinson's probes; print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="8,32,128")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=10, help="Hutchinson probe seeds")
    parser.add_argument("--points", type=int, default=16, help="data points per mixture")
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
    hutch = hutchinson_rows(args.seeds, args.points)
    print(f"\nHutchinson vs exact log-likelihood ({args.points} points x {args.seeds} probe seeds)")
    print(f"{'mixture':<20} {'probes':>6} {'probe':<11} {'mean rel err':>12} {'rms rel err':>11}")
    for r in hutch:
        print(f"{r['mixture']:<20} {r['probes_per_eval']:>6} {r['probe']:<11} "
              f"{r['mean_rel_err']:>12.4f} {r['rms_rel_err']:>11.4f}")
    result = {"machine": platform.machine(), "processor": platform.processor(),
              "threads": args.threads, "batch": args.batch, "chunk": args.chunk,
              "torch": torch.__version__, "rows": rows, "hutchinson": hutch}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
