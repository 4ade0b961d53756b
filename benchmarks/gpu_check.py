"""Run the core on an accelerator: train the toy model, sample with every sampler, time them.

Checks that nothing in the core is tied to the CPU (noise generators, time tables, likelihood),
and reports sampler throughput with a trained MLP denoiser on the device next to the CPU.

    python benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch

from domaindiff.data import atomic_write_text
from domaindiff.likelihood import log_likelihood
from domaindiff.toy import GaussianMixtureData, ToyDiffusion
from domaindiff.toy.metrics import energy_distance

SAMPLERS = [("euler_maruyama", {}), ("pc", {}), ("ancestral", {}), ("ddim", {}), ("euler", {}),
            ("heun", {}), ("dpm_solver", {"order": 3}), ("dpm_solver_pp_2m", {}),
            ("deis", {"order": 3}), ("ode", {})]


def main() -> None:
    """Train on the device, sample on device and CPU, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = parser.parse_args()
    L.seed_everything(0)
    data = GaussianMixtureData(mixture="ring8", num_train=32768, batch_size=1024)
    model = ToyDiffusion(hidden=256, depth=4, lr=2e-3, num_val_samples=0, ema_decay=0.999)
    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    t0 = time.perf_counter()
    L.Trainer(max_epochs=args.epochs, accelerator=accel, devices=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, data)
    train_s = time.perf_counter() - t0
    steps = args.epochs * (32768 // 1024)
    ref = data.mixture.sample(args.n, torch.Generator().manual_seed(1))
    rows = []
    for device in (args.device, "cpu") if args.device != "cpu" else ("cpu",):
        model.to(device)
        for name, opts in SAMPLERS:
            gen = torch.Generator(device=device).manual_seed(0)
            model.sample(16, sampler=name, steps=20, generator=gen, **opts)  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            x = model.sample(args.n, sampler=name, steps=20, generator=gen, **opts)["x"]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            rows.append({"device": device, "sampler": name, "nfe": 20 if name != "ode" else None,
                         "seconds": sec, "finite": bool(torch.isfinite(x).all()),
                         "energy_distance": float(energy_distance(x[:4000].cpu(), ref[:4000]))})
    model.to(args.device)
    x = data.mixture.sample(64, torch.Generator().manual_seed(2)).to(args.device)
    ll = log_likelihood(model.denoiser(), model.processes, x, exact=True, rtol=1e-4, atol=1e-4)
    result = {"device": args.device, "name": torch.cuda.get_device_name() if accel == "gpu" else
              platform.processor(), "train_seconds": train_s, "train_steps": steps,
              "steps_per_second": steps / train_s, "nll_model": float(-ll["logp"].mean().cpu()),
              "nll_true": float(-data.mixture.log_prob(x.cpu()).mean()), "rows": rows}
    print(f"trained {steps} steps on {args.device} in {train_s:.1f} s "
          f"({steps / train_s:.1f} steps/s); NLL model {result['nll_model']:.3f} vs true "
          f"{result['nll_true']:.3f}")
    print(f"{'sampler':18s} {'device':8s} {'seconds':>9s} {'ED':>8s}  (n = {args.n}, 20 NFE)")
    for r in rows:
        print(f"{r['sampler']:18s} {r['device']:8s} {r['seconds']:9.3f} {r['energy_distance']:8.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
