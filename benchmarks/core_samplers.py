"""Sampler accuracy against network evaluations, with the exact score of a Gaussian mixture.

For each sampler and NFE in {5, 10, 20, 50, 100, 250}: the energy distance and sliced W2 between
its samples and exact samples of the target (8-Gaussian ring, VP SDE), and wall time; then which
NFE each sampler needs to reach the accuracy of the adaptive probability-flow ODE (dopri5).

    python benchmarks/core_samplers.py [--n 4000] [--out benchmarks/results/core_samplers.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from domaindiff.data import atomic_write_text
from domaindiff.processes import VP
from domaindiff.samplers import get_sampler, sample_ode
from domaindiff.toy.data import make_mixture
from domaindiff.toy.metrics import energy_distance, sliced_wasserstein
from domaindiff.toy.mixtures import ExactDenoiser

SAMPLERS = [
    ("euler_maruyama", {}), ("pc", {"snr": 0.16}), ("ancestral", {}), ("ddim", {}),
    ("euler", {}), ("heun", {}), ("dpm_solver", {"order": 1}), ("dpm_solver", {"order": 2}),
    ("dpm_solver", {"order": 3}), ("dpm_solver_pp_2m", {}), ("deis", {"order": 3}),
]
NFES = (5, 10, 20, 50, 100, 250)


def label(name: str, opts: dict) -> str:
    """Readable sampler name."""
    return name + (f"-{opts['order']}" if "order" in opts else "")


def main() -> None:
    """Run the sweep, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000, help="samples per run")
    parser.add_argument("--out", default="benchmarks/results/core_samplers.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    mix = make_mixture("ring8")
    proc = VP()
    den = ExactDenoiser(mix, proc)
    ref = mix.sample(args.n, torch.Generator().manual_seed(1))
    floor = float(energy_distance(mix.sample(args.n, torch.Generator().manual_seed(2)), ref))

    def score(x):
        return (float(energy_distance(x, ref)),
                float(sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0))))

    t0 = time.perf_counter()
    nfe_box = {}
    x = sample_ode(den, proc, (args.n, 2), None, generator=torch.Generator().manual_seed(0),
                   callback=lambda info: nfe_box.update(nfe=info.get("nfe")))
    ode = {"energy_distance": score(x)[0], "sliced_w2": score(x)[1],
           "seconds": time.perf_counter() - t0, "nfe": nfe_box.get("nfe")}
    rows = []
    for name, opts in SAMPLERS:
        for nfe in NFES:
            t0 = time.perf_counter()
            x = get_sampler(name)(den, proc, (args.n, 2), nfe,
                                  generator=torch.Generator().manual_seed(0), **opts)
            sec = time.perf_counter() - t0
            ed, sw = score(x) if torch.isfinite(x).all() else (float("inf"), float("inf"))
            rows.append({"sampler": label(name, opts), "nfe": nfe, "energy_distance": ed,
                         "sliced_w2": sw, "seconds": sec})
    target = 1.25 * ode["energy_distance"]
    needed = {}
    for name, opts in SAMPLERS:
        lab = label(name, opts)
        ok = [r["nfe"] for r in rows if r["sampler"] == lab and r["energy_distance"] <= target]
        needed[lab] = min(ok) if ok else None
    print(f"target: 8-Gaussian ring, VP SDE, exact score; {args.n} samples; "
          f"noise floor (exact vs exact) ED = {floor:.4f}")
    print(f"adaptive ODE (dopri5, rtol=atol=1e-5): ED = {ode['energy_distance']:.4f}, "
          f"SW2 = {ode['sliced_w2']:.4f}, NFE = {ode['nfe']}, {ode['seconds']:.2f} s")
    header = f"{'sampler':18s}" + "".join(f"{n:>9d}" for n in NFES) + "   NFE to reach ODE"
    print("\nenergy distance by NFE\n" + header)
    for name, opts in SAMPLERS:
        lab = label(name, opts)
        vals = [r["energy_distance"] for r in rows if r["sampler"] == lab]
        print(f"{lab:18s}" + "".join(f"{v:9.4f}" for v in vals) + f"   {needed[lab]}")
    print("\nseconds by NFE\n" + header.replace("   NFE to reach ODE", ""))
    for name, opts in SAMPLERS:
        lab = label(name, opts)
        vals = [r["seconds"] for r in rows if r["sampler"] == lab]
        print(f"{lab:18s}" + "".join(f"{v:9.3f}" for v in vals))
    result = {"machine": platform.platform(), "processor": platform.processor(),
              "threads": torch.get_num_threads(), "n_samples": args.n, "noise_floor": floor,
              "ode": ode, "rows": rows, "nfe_to_reach_ode": needed,
              "criterion": "energy distance <= 1.25 x adaptive ODE's"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
