"""Per-step sampler overhead: domaindiff against diffusers' schedulers, side by side in one run.

Both libraries sample the same discrete DDPM schedule (1000 linear betas, 1e-4 .. 0.02) with the
same exact denoiser: the closed-form noise prediction of an isotropic Gaussian mixture, evaluated
from one shared ``alpha_bar`` table at the integer training step each library asks for. Each pair
of runs starts from the same noise, uses the same number of network evaluations (NFE) on the same
time grid, and must end at the same samples (checked to ``--tol``), so the timing compares like
with like:

- DDIM (eta = 0): diffusers' ``DDIMScheduler`` with "trailing" spacing (steps 999, 899, .., 99,
  then alpha_bar = 1) and domaindiff's ``sample_ddim`` on ``DiscreteDDPM().with_t_min(0.1)``
  (uniform grid 1.0, 0.9, .., 0.1, then the clean prediction);
- DPM-Solver++(2M), and UniPC-bh2 / DPM-Solver++(3M) where domaindiff has them: diffusers'
  multistep schedulers with "trailing" spacing and a zero final sigma, domaindiff's samplers on
  ``DiscreteDDPM().with_t_min(0.0)`` with the uniform grid 1.0, 0.9, .., 0.1, 0.0.

Times are CPU seconds of the sampling thread (with ``--threads 1`` every tensor operation runs in
it), so other jobs on a shared machine do not inflate them; ``--clock wall`` uses wall time. The
denoiser's own time is measured inside it and subtracted: the per-step overhead is
``(total - denoiser) / NFE``, the median over ``--repeats`` interleaved runs; the ratio is
domaindiff's overhead over diffusers'. Goal: ratio <= 1.

diffusers is a benchmark extra (``pip install 'domaindiff[bench]'``), never a core dependency.

    python benchmarks/core_overhead.py [--nfe 10] [--repeats 30] [--threads 1]
        [--out benchmarks/results/core_overhead.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from domaindiff.data import atomic_write_text
from domaindiff.processes import DiscreteDDPM
from domaindiff.samplers import SAMPLERS

NUM_TRAIN = 1000
#: CPU time of this thread: with one torch thread every operation runs here, and time the shared
#: machine's other jobs take from us is not counted (wall time is, with --clock wall)
CLOCK = time.thread_time


def require_diffusers() -> Any:
    """Import diffusers or stop with the line that installs it."""
    try:
        import diffusers
    except ImportError as err:
        raise SystemExit("benchmarks/core_overhead.py compares against diffusers, which is not "
                         "installed: pip install 'domaindiff[bench]' (or pip install diffusers)"
                         ) from err
    return diffusers


class MixtureEps:
    """Exact ``eps`` prediction of an isotropic Gaussian mixture at a training step ``k``.

    Component ``j`` is ``N(mu_j, c2_j I)``; at step ``k`` with ``a^2 = alpha_bar[k]`` and
    ``s^2 = 1 - a^2`` it is ``N(a mu_j, (a^2 c2_j + s^2) I)`` and ``eps* = -s grad log p``. Costs
    O(B K D), so the denoiser does not swamp the samplers' overhead. ``seconds`` accumulates the
    time spent inside.

    Args:
        abar: ``(N,)`` float64 alpha_bar of the training steps 0 .. N-1.
        dim: data dimension D.
        components: K.
        seed: seed of the means.
    """

    def __init__(self, abar: Tensor, dim: int, components: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.abar = abar.tolist()
        self.mu = 2.0 * torch.randn(components, dim, generator=g)
        self.c2 = 0.05 + 0.2 * torch.rand(components, generator=g)
        self.mu_sq = (self.mu**2).sum(1)
        self.seconds = 0.0
        self.calls = 0

    def at_step(self, x: Tensor, k: int) -> Tensor:
        """``eps*(x)`` at training step ``k`` (0-based, as diffusers counts)."""
        start = CLOCK()
        a2 = self.abar[k]
        a, s2 = a2**0.5, 1.0 - a2
        var = a2 * self.c2 + s2  # (K,)
        xm = x @ self.mu.T  # (B, K)
        sq = (x * x).sum(1, keepdim=True) - 2 * a * xm + a2 * self.mu_sq  # |x - a mu_j|^2
        logc = -0.5 * sq / var - 0.5 * x.shape[1] * torch.log(var)
        r = torch.softmax(logc, 1) / var  # (B, K)
        eps = s2**0.5 * (x * r.sum(1, keepdim=True) - a * (r @ self.mu))
        self.seconds += CLOCK() - start
        self.calls += 1
        return eps


class DomainDenoiser:
    """The mixture seen by domaindiff: continuous time ``t = (k + 1) / N`` -> step ``k``."""

    parametrization = "eps"

    def __init__(self, core: MixtureEps) -> None:
        self.core = core

    def __call__(self, state: Any, t: Tensor) -> Any:
        x = state["x"] if isinstance(state, dict) else state
        k = round(float(t.reshape(-1)[0]) * NUM_TRAIN) - 1
        eps = self.core.at_step(x, k)
        return {"x": eps} if isinstance(state, dict) else eps


def diffusers_schedulers(diffusers: Any, betas: list[float]) -> dict[str, Callable[[], Any]]:
    """Constructors of the diffusers schedulers on the same betas and grids as domaindiff's runs."""
    common = {"num_train_timesteps": NUM_TRAIN, "trained_betas": betas,
              "prediction_type": "epsilon", "timestep_spacing": "trailing"}
    return {
        "ddim": lambda: diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True,
                                                **common),
        "dpm_solver_pp_2m": lambda: diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
            lower_order_final=True, final_sigmas_type="zero", **common),
        "dpm_solver_pp_3m": lambda: diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=3, lower_order_final=True,
            final_sigmas_type="zero", **common),
        "unipc": lambda: diffusers.UniPCMultistepScheduler(
            solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
            final_sigmas_type="zero", **common),
    }


#: domaindiff's side of each comparison: sampler options and the data-end time of the process
DOMAIN = {
    "ddim": ({"schedule": "uniform"}, 0.1),
    "dpm_solver_pp_2m": ({"schedule": "uniform"}, 0.0),
    # diffusers' 3M weights the second difference by 1/2 - phi_2/h (see domaindiff's docstring)
    "dpm_solver_pp_3m": ({"schedule": "uniform", "reference_d2": True}, 0.0),
    "unipc": ({"schedule": "uniform", "order": 2, "variant": "bh2"}, 0.0),
}
LABELS = {"ddim": "DDIM", "dpm_solver_pp_2m": "DPM-Solver++(2M)",
          "dpm_solver_pp_3m": "DPM-Solver++(3M)", "unipc": "UniPC-bh2 (order 2)"}


def run_diffusers(make: Callable[[], Any], core: MixtureEps, x_T: Tensor, nfe: int) -> Tensor:
    """A diffusers sampling loop, as its pipelines run it (the scheduler is built once)."""
    sched = make()
    sched.set_timesteps(nfe)
    x = x_T.clone()
    for k in sched.timesteps:
        eps = core.at_step(x, int(k))
        x = sched.step(eps, k, x).prev_sample
    return x


def timed(fn: Callable[[], Tensor], core: MixtureEps) -> tuple[float, float, Tensor]:
    """``(total seconds, denoiser seconds, result)`` of one run."""
    core.seconds = 0.0
    start = CLOCK()
    out = fn()
    return CLOCK() - start, core.seconds, out


def compare(name: str, diffusers: Any, shape: tuple[int, int], nfe: int, repeats: int,
            tol: float) -> dict[str, Any]:
    """Time one solver on one state shape in both libraries; check they agree."""
    betas32 = torch.linspace(1e-4, 0.02, NUM_TRAIN, dtype=torch.float32)  # diffusers' float32
    proc = DiscreteDDPM(betas=betas32.double().tolist())
    core = MixtureEps(proc.alphas_cumprod, shape[1])
    den = DomainDenoiser(core)
    make = diffusers_schedulers(diffusers, betas32.tolist())[name]
    opts, t_min = DOMAIN[name]
    p = proc.with_t_min(t_min)
    sampler = SAMPLERS[name]
    accepted = inspect.signature(sampler).parameters
    opts = {k: v for k, v in opts.items() if k in accepted}  # options this domaindiff knows
    x_T = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    info: dict[str, Any] = {}

    def ours() -> Tensor:
        return sampler(den, p, x_T.clone(), nfe, info=info, **opts)

    def theirs() -> Tensor:
        return run_diffusers(make, core, x_T, nfe)

    core.calls = 0
    a, b = ours(), theirs()
    calls_theirs = core.calls - info["nfe"]
    if info["nfe"] != nfe or calls_theirs != nfe:
        raise SystemExit(f"{name}: NFE differ (domaindiff {info['nfe']}, diffusers "
                         f"{calls_theirs}, asked {nfe})")
    scale = float(b.abs().max())
    max_diff = float((a - b).abs().max())
    for _ in range(2):  # warm-up
        ours(), theirs()
    runs: dict[str, list[tuple[float, float]]] = {"domaindiff": [], "diffusers": []}
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        for lib, fn in (("domaindiff", ours), ("diffusers", theirs)):
            total, inside, _ = timed(fn, core)
            runs[lib].append((total, inside))

    def med(lib: str, what: int | None) -> float:
        vals = [r[0] - r[1] if what is None else r[what] for r in runs[lib]]
        return statistics.median(vals)

    row: dict[str, Any] = {"solver": LABELS[name], "sampler": name, "shape": list(shape),
                           "nfe": nfe, "max_abs_diff": max_diff, "scale": scale,
                           "match": max_diff <= tol * max(scale, 1.0)}
    for lib in runs:
        row[f"{lib}_total_ms"] = 1e3 * med(lib, 0)
        row[f"{lib}_denoiser_ms"] = 1e3 * med(lib, 1)
        row[f"{lib}_overhead_us_per_step"] = 1e6 * med(lib, None) / nfe
    row["overhead_ratio"] = (row["domaindiff_overhead_us_per_step"]
                             / row["diffusers_overhead_us_per_step"])
    row["total_ratio"] = row["domaindiff_total_ms"] / row["diffusers_total_ms"]
    return row


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of the per-step overhead of both libraries per solver and shape."""
    from domaindiff.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    short = {"ddim": "DDIM", "dpm_solver_pp_2m": "DPM++2M", "dpm_solver_pp_3m": "DPM++3M",
             "unipc": "UniPC-bh2"}
    labels = [f"{short.get(r['sampler'], r['sampler'])}\n{r['shape'][0]}x{r['shape'][1]}"
              for r in rows]
    xs = torch.arange(len(rows), dtype=torch.float64).tolist()
    ax.bar([x - 0.2 for x in xs], [r["domaindiff_overhead_us_per_step"] for r in rows], 0.4,
           label="domaindiff")
    ax.bar([x + 0.2 for x in xs], [r["diffusers_overhead_us_per_step"] for r in rows], 0.4,
           label="diffusers")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("overhead per step (us)")
    ax.set_title("sampler overhead per network evaluation (same denoiser, grid, NFE)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    """Run every comparison, print the table, write JSON (and a PNG)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", default="4000x2,64x1000")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="largest |domaindiff - diffusers| relative to the samples' scale")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--out", default="benchmarks/results/core_overhead.json")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "thread" else time.perf_counter
    diffusers = require_diffusers()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    names = [n for n in DOMAIN if n in SAMPLERS]
    skipped = [n for n in DOMAIN if n not in SAMPLERS]
    rows = []
    print(f"{'solver':<20} {'state':>8} {'NFE':>4} {'dd total ms':>11} {'df total ms':>11} "
          f"{'dd us/step':>10} {'df us/step':>10} {'ratio':>6} {'max |diff|':>10}")
    for name in names:
        for shape in shapes:
            r = compare(name, diffusers, shape, args.nfe, args.repeats, args.tol)
            rows.append(r)
            print(f"{r['solver']:<20} {shape[0]:>4}x{shape[1]:<4} {args.nfe:>3} "
                  f"{r['domaindiff_total_ms']:>11.2f} {r['diffusers_total_ms']:>11.2f} "
                  f"{r['domaindiff_overhead_us_per_step']:>10.0f} "
                  f"{r['diffusers_overhead_us_per_step']:>10.0f} {r['overhead_ratio']:>6.2f} "
                  f"{r['max_abs_diff']:>10.1e}{'' if r['match'] else '  MISMATCH'}")
    if skipped:
        print(f"not in this domaindiff: {skipped}")
    result = {"machine": platform.machine(), "processor": platform.processor(),
              "threads": args.threads, "clock": args.clock, "repeats": args.repeats,
              "torch": torch.__version__, "diffusers": diffusers.__version__, "tol": args.tol, "rows": rows,
              "skipped": skipped}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    png = Path(args.out).with_suffix(".png")
    plot(rows, png)
    print(f"wrote {args.out} and {png}")
    bad = [f"{r['solver']} {r['shape']}" for r in rows if not r["match"]]
    if bad:
        raise SystemExit(f"domaindiff and diffusers disagree beyond tol={args.tol}: {bad}")


if __name__ == "__main__":
    main()
