"""How good is a GeoTDM checkpoint as a point forecaster, noise level by noise level?

Noises the test forecasts' residuals to time t, asks the network for the clean residual and
scores that one-shot estimate with ADE/FDE (no sampling). At t = T it is the network's estimate
of the conditional mean, directly comparable with a regression forecaster; the gap between it
and the sampled forecasts' ADE averaged over K is the spread of the samples.

    python benchmarks/trajectories_denoiser_error.py --ckpt runs/trajectories_charged_long.ckpt \
        --num-test 200 --num-eval 64 --out benchmarks/results/trajectories_denoiser_error.json
"""

from __future__ import annotations

import argparse
import json

import torch

from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff_trajectories.data import NBody
from domaindiff_trajectories.metrics import ade_fde


def main() -> None:
    """Print and write the one-shot clean-residual ADE/FDE at several noise levels."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--system", default="charged")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--num-eval", type=int, default=64)
    p.add_argument("--times", default="1.0,0.8,0.5,0.2,0.05")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/trajectories_denoiser_error.json")
    args = p.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    model = load_checkpoint(args.ckpt).eval()
    data = NBody(args.system, num_train=args.num_train, num_val=args.num_val,
                 num_test=args.num_test, batch_size=args.num_eval)
    data.setup()
    batch = next(iter(data.test_dataloader()))
    state = model.batch_to_state(batch)
    den = model.denoiser(True)
    proc = model.processes["x"]
    truth = state["x"]
    with torch.no_grad():
        ref = den.net.reference(state)
    residual = (truth - ref) / model.scale
    rows = []
    print(f"{'t':>6} {'alpha':>7} {'ADE':>7} {'FDE':>7}")
    for t in (float(v) for v in args.times.split(",")):
        tt = torch.full((truth.shape[0],), t * proc.T)
        a = proc.alpha(tt).view(-1, 1, 1, 1)
        s = proc.sigma(tt).view(-1, 1, 1, 1)
        noise = proc.space.project(torch.randn(residual.shape, generator=gen), state)
        noisy = {**state, "x": a * residual + s * noise}
        with torch.no_grad():
            out = den(noisy, tt)["x"]
        x0 = out if model.parametrization == "x0" else (noisy["x"] - s * out) / a
        ade, fde = ade_fde(x0 * model.scale + ref, truth, state.get("mask"))
        rows.append({"t": t, "alpha": float(a.flatten()[0]), "ade": float(ade.mean()),
                     "fde": float(fde.mean())})
        print(f"{t:>6.2f} {rows[-1]['alpha']:>7.3f} {rows[-1]['ade']:>7.3f} {rows[-1]['fde']:>7.3f}")
    atomic_write_text(args.out, json.dumps({"ckpt": args.ckpt, "num_eval": len(truth),
                                            "system": args.system, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
