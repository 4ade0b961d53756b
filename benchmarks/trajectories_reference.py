"""Train and score the reference GeoTDM code (hanjq17/GeoTDM) on CPU, for the side-by-side table.

Runs in the reference's own environment, not the project's: a separate virtual environment with
torch, torch-geometric, einops, easydict and scikit-learn, and a checkout of
https://github.com/hanjq17/GeoTDM (``--ref``). Nothing of the reference is copied here: this
script imports its modules (``datasets.nbody.NBody``, ``models.EGTN.EGTN``,
``diffusion.GeoTDM.GeoTDM``) and runs the loop of its ``experiments/nbody_train.py`` on one CPU
thread, because that script itself cannot run on a CPU (it moves every tensor to CUDA device
``rank`` and divides the batch size by ``torch.cuda.device_count()``, which is 0 here).

The loop is the reference's: eps prediction, FIXED_LARGE variance, MSE per node averaged per
graph, Adam, gradient clipping at 1.0, no EMA; scored with the reference's own ancestral
``p_sample_loop`` over all ``T`` steps, ADE/FDE averaged and minimum over K exactly as its
final test. Two settings differ from its config, and equally for the plugin's rows of
``benchmarks/trajectories_fidelity.py``: the network size (``--hidden``/``--layers``) and the
optimiser schedule (``--lr`` decayed linearly to 10 % over ``--steps``, the reference's 1e-4 is
far too slow for a CPU budget). The package ``torch_scatter`` that the reference imports has no
wheel for this torch; its ``scatter`` is served by torch-geometric's identical function.

    /tmp/geotdm_venv/bin/python benchmarks/trajectories_reference.py --ref /tmp/geotdm_ref \\
        --root DIR_OF_GENERATOR_FILES --steps 1500 --out benchmarks/results/trajectories_reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from pathlib import Path


def _shim_torch_scatter() -> None:
    """Serve ``from torch_scatter import scatter`` by ``torch_geometric.utils.scatter``."""
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        from torch_geometric.utils import scatter

        module = types.ModuleType("torch_scatter")
        module.scatter = scatter  # type: ignore[attr-defined]
        sys.modules["torch_scatter"] = module


def main(argv: list[str] | None = None) -> int:
    """Train the reference for ``--steps`` steps, scoring at the curve points; write JSON."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="checkout of hanjq17/GeoTDM")
    p.add_argument("--root", required=True, help="folder of the generator's N-body files")
    p.add_argument("--suffix", default="charged5_initvel1")
    p.add_argument("--num-train", type=int, default=None, help="force_length of the train split")
    p.add_argument("--num-eval", type=int, default=50)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--curve-points", type=int, default=2)
    p.add_argument("--score-at", default=None,
                   help="comma list of steps to score at (overrides --curve-points)")
    p.add_argument("--eval-batch-size", type=int, default=20,
                   help="test trajectories per p_sample_loop call (the reference's "
                        "eval_batch_size; its EGTN's cost per call grows faster than the batch "
                        "on this CPU: 0.08 s at 20, 0.47 s at 60, 2.7 s at 300)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--layers-ref", type=int, default=1)
    p.add_argument("--time-dim", type=int, default=16)
    p.add_argument("--num-timesteps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(args.ref).resolve()))
    _shim_torch_scatter()
    from datasets.nbody import NBody as RefNBody
    from diffusion.GeoTDM import GeoTDM as RefGeoTDM
    from diffusion.GeoTDM import LossType, ModelMeanType, ModelVarType
    from models.EGTN import EGTN as RefEGTN
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import global_mean_pool

    torch.manual_seed(args.seed)
    root = str(Path(args.root).resolve())
    train = RefNBody(root=root, name="ref_train", suffix=f"train_{args.suffix}", span=30,
                     force_length=args.num_train)
    test = RefNBody(root=root, name="ref_test", suffix=f"test_{args.suffix}", span=30,
                    force_length=args.num_eval)
    net = RefEGTN(n_layers=args.layers, node_dim=1, edge_dim=1, hidden_dim=args.hidden,
                  time_emb_dim=args.time_dim, act_fn="silu", learn_ref_frame=True,
                  n_layers_ref=args.layers_ref, num_w=20)
    diffusion = RefGeoTDM(denoise_network=net, beta_schedule_name="linear",
                          num_timesteps=args.num_timesteps, model_mean_type=ModelMeanType.EPSILON,
                          model_var_type=ModelVarType.FIXED_LARGE, loss_type=LossType.MSE,
                          device="cpu", rescale_timesteps=False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    cond_frames = 10

    def kwargs_of(data):
        cond_mask = torch.zeros(1, 1, data.x.size(-1))
        cond_mask[..., :cond_frames] = 1
        return {"h": data.h, "edge_index": data.edge_index, "edge_attr": data.edge_attr,
                "batch": data.batch, "cond_mask": cond_mask, "x_given": data.x}

    @torch.no_grad()
    def score() -> dict[str, float]:
        net.eval()
        ade_k, fde_k = [], []
        t0, c0 = time.perf_counter(), time.process_time()
        for data in DataLoader(test, batch_size=args.eval_batch_size, shuffle=False):
            kw = kwargs_of(data)
            target = data.x[..., cond_frames:]
            a, f = [], []
            for _ in range(args.k):
                out = diffusion.p_sample_loop(shape=target.shape, model_kwargs=kw)
                dist = global_mean_pool((out - target).square().sum(1).sqrt(), data.batch)
                a.append(dist.mean(1))
                f.append(dist[:, -1])
            ade_k.append(torch.stack(a, -1))
            fde_k.append(torch.stack(f, -1))
        ade, fde = torch.cat(ade_k), torch.cat(fde_k)
        net.train()
        return {"ade_avg": float(ade.mean()), "fde_avg": float(fde.mean()),
                "ade_min": float(ade.min(-1).values.mean()),
                "fde_min": float(fde.min(-1).values.mean()),
                "sample_seconds": time.perf_counter() - t0,
                "sample_cpu_seconds": time.process_time() - c0,
                "network_calls": args.k * args.num_timesteps * math.ceil(len(test) /
                                                                         args.eval_batch_size)}

    if args.score_at:
        points = sorted(int(s) for s in args.score_at.split(","))
    else:
        points = [round(args.steps * (i + 1) / args.curve_points)
                  for i in range(args.curve_points)]
    curve, steps, trained, trained_cpu, epoch = [], 0, 0.0, 0.0, 0
    result = {"ref": str(args.ref), "root": root, "num_train": len(train), "num_eval": len(test),
              "settings": vars(args), "sampler": f"reference ancestral p_sample_loop, "
              f"{args.num_timesteps} steps (FIXED_LARGE)", "curve": curve}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    while steps < args.steps:
        for data in DataLoader(train, batch_size=args.batch_size, shuffle=True):
            t0, c0 = time.perf_counter(), time.process_time()
            for g in opt.param_groups:
                g["lr"] = args.lr * (1.0 - 0.9 * min(steps / args.steps, 1.0))
            kw = kwargs_of(data)
            losses = diffusion.training_losses(x_start=data.x[..., cond_frames:], t=None,
                                               model_kwargs=kw)
            loss = global_mean_pool(losses["loss"], data.batch).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            steps += 1
            trained += time.perf_counter() - t0
            trained_cpu += time.process_time() - c0
            if points and steps >= points[0]:
                points.pop(0)
                row = {"steps": steps, "train_seconds": trained,
                       "train_cpu_seconds": trained_cpu, "epoch": epoch,
                       "loss": float(loss), **score()}
                curve.append(row)
                print(json.dumps(row), flush=True)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(result, indent=2))
                os.replace(tmp, out)
            if steps >= args.steps:
                break
        epoch += 1
    result["final"] = curve[-1]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"reference GeoTDM, {steps} steps ({trained:.0f} s): {json.dumps(curve[-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
