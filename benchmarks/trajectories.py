"""GeoTDM benchmark: ADE/FDE against network evaluations, next to two baselines.

Trains GeoTDM (forecasting, learnable prior) on an N-body split for ``--epochs`` epochs, trains an
EGTN regression baseline (same network, deterministic MSE forecaster) on the same data, then
forecasts the test split with the paper's ancestral sampler and with fast samplers at ~10x fewer
network evaluations. Reports ADE/FDE (average and minimum over K), constant velocity, training
steps per second and seconds per sampled batch on this machine. Prints a table, writes JSON.

    python benchmarks/trajectories.py --epochs 3 --num-train 256 --num-test 64      # quick CPU
    python benchmarks/trajectories.py --epochs 200 --device cuda --samplers ancestral:1000,ddim:100
    # the committed CPU run (benchmarks/results/trajectories_charged.json), 1 thread, ~35 min:
    nice -n 15 python benchmarks/trajectories.py --num-train 1000 --num-val 64 --num-test 200 \
        --num-eval 20 --hidden 32 --layers 2 --time-dim 16 --prior-layers 1 --batch-size 32 \
        --lr 2e-3 --ema 0.995 --scale 0.5 --parametrization x0 --epochs 1000 \
        --train-minutes 12 --reg-minutes 4 --samplers ancestral:1000,ddim:10,ddim:20,ddim:50,\
    ddim:100,dpm_solver_pp_2m:10,dpm_solver_pp_2m:20,dpm_solver_pp_2m:50,deis:10,deis:20,deis:50

    # the longer CPU run (benchmarks/results/trajectories_charged_long.json), ~75 min:
    DOMAINDIFF_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python benchmarks/trajectories.py \
        --num-train 1000 --num-val 64 --num-test 200 --num-eval 64 --hidden 32 --layers 2 \
        --time-dim 16 --prior-layers 1 --batch-size 32 --lr 2e-3 --lr-gamma 0.995 --ema 0.999 \
        --scale 0.5 --parametrization x0 --x0-skip alpha --epochs 10000 --train-minutes 50 \
        --reg-minutes 8 --samplers ancestral:1000,ddim:10,ddim:20,ddim:50,dpm_solver_pp_2m:10,\
    dpm_solver_pp_2m:20,dpm_solver_pp_2m:50,deis:10,deis:20,deis:50 --threads 1 \
        --out benchmarks/results/trajectories_charged_long.json

GeoTDM and the regression baseline train until ``--epochs`` or their time budget, whichever comes
first (the epochs reached are recorded). Sampling is expensive on a CPU (1000 ancestral steps x K
samples per trajectory), so the sampler table uses the first ``--num-eval`` test trajectories;
constant velocity and the regression baseline are reported on those and on the whole test split.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "trajectories")]

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_trajectories.data import NBody  # noqa: E402
from domaindiff_trajectories.evaluate import forecast_metrics  # noqa: E402
from domaindiff_trajectories.metrics import ade_fde, constant_velocity  # noqa: E402
from domaindiff_trajectories.model import GeoTDM  # noqa: E402
from domaindiff_trajectories.networks import EGTNRegressor  # noqa: E402


class _StepTimer(L.Callback):
    def __init__(self) -> None:
        self.steps, self.seconds, self._t = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.steps += 1
        self.seconds += time.perf_counter() - self._t


def train_regressor(data: NBody, hidden: int, layers: int, epochs: int, lr: float,
                    device: str, max_seconds: float = float("inf"),
                    lr_gamma: float | None = None) -> tuple[EGTNRegressor, float, int]:
    """Train the regression baseline with MSE (Adam, clip 1.0, optional ExponentialLR).

    Returns:
        the model, its training seconds and the epochs completed (stops at ``max_seconds``).
    """
    torch.manual_seed(0)
    model = EGTNRegressor(1, hidden, layers, data.pred_frames).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = None if lr_gamma is None else torch.optim.lr_scheduler.ExponentialLR(opt, lr_gamma)
    t0 = time.perf_counter()
    done = 0
    for _ in range(epochs):
        if time.perf_counter() - t0 > max_seconds:
            break
        done += 1
        for batch in data.train_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = ((model(batch) - batch["x"]) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if sched is not None:
            sched.step()
    return model, time.perf_counter() - t0, done


@torch.no_grad()
def regression_metrics(model: EGTNRegressor, loader: DataLoader, device: str) -> dict:
    """ADE/FDE of the regressor and of constant velocity on a loader."""
    sums = {"reg_ade": 0.0, "reg_fde": 0.0, "cv_ade": 0.0, "cv_fde": 0.0}
    n = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        a, f = ade_fde(model(batch), batch["x"], batch["mask"])
        ca, cf = ade_fde(constant_velocity(batch["cond"], batch["x"].shape[2]), batch["x"],
                         batch["mask"])
        for key, v in (("reg_ade", a), ("reg_fde", f), ("cv_ade", ca), ("cv_fde", cf)):
            sums[key] += float(v.sum())
        n += len(batch["x"])
    return {k: v / max(n, 1) for k, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--system", default="charged")
    p.add_argument("--num-train", type=int, default=3000)
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--num-eval", type=int, default=None,
                   help="test trajectories sampled for the sampler table (default: all)")
    p.add_argument("--train-minutes", type=float, default=None, help="GeoTDM time budget")
    p.add_argument("--reg-minutes", type=float, default=None, help="regression time budget")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--scale", type=float, default=1.0, help="GeoTDM residual scale")
    p.add_argument("--prior-init", default="velocity")
    p.add_argument("--parametrization", default="eps", help="GeoTDM prediction: eps or x0")
    p.add_argument("--x0-skip", default="identity",
                   help="x0 prediction's skip connection: identity (x_t) or alpha (alpha(t) x_t)")
    p.add_argument("--skip-sigma-data", type=float, default=1.0,
                   help="with --x0-skip alpha: the residual spread its skip assumes (1: plain "
                        "alpha, as the recorded runs; the model's default is 0.25)")
    p.add_argument("--lr-gamma", type=float, default=None,
                   help="ExponentialLR factor per epoch of GeoTDM and of the regression "
                        "baseline (default: constant lr)")
    p.add_argument("--time-dim", type=int, default=32)
    p.add_argument("--prior-layers", type=int, default=2)
    p.add_argument("--ckpt-out", default=None, help="save the trained GeoTDM (Lightning ckpt)")
    p.add_argument("--samplers", default="ancestral:1000,ancestral:100,ddim:100,"
                                         "dpm_solver_pp_2m:50,deis:50",
                   help="comma list of sampler:NFE")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                        "trajectories_charged.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    data = NBody(args.system, num_train=args.num_train, num_val=args.num_val,
                 num_test=args.num_test, batch_size=args.batch_size)
    data.setup()
    model = GeoTDM(hidden=args.hidden, layers=args.layers, lr=args.lr, ema_decay=args.ema,
                   scale=args.scale, prior_init=args.prior_init, time_dim=args.time_dim,
                   prior_layers=args.prior_layers, pred_frames=data.pred_frames, x0_clip=20.0,
                   parametrization=args.parametrization, x0_skip=args.x0_skip,
                   skip_sigma_data=args.skip_sigma_data,
                   lr_gamma=args.lr_gamma)
    timer = _StepTimer()
    max_time = None if args.train_minutes is None else {"minutes": args.train_minutes}
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if args.device == "cuda"
                        else "cpu", devices=1, gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], limit_val_batches=0,
                        max_time=max_time)
    t0 = time.perf_counter()
    trainer.fit(model, data.train_dataloader())
    train_s = time.perf_counter() - t0
    if args.ckpt_out:
        trainer.save_checkpoint(args.ckpt_out)
    model = model.to(args.device).eval()
    reg_budget = float("inf") if args.reg_minutes is None else 60 * args.reg_minutes
    reg, reg_s, reg_epochs = train_regressor(data, args.hidden, args.layers, args.epochs,
                                             args.lr, args.device, reg_budget, args.lr_gamma)
    full = regression_metrics(reg, DataLoader(data.test_set, batch_size=args.batch_size),
                              args.device)
    n_eval = len(data.test_set) if args.num_eval is None else min(args.num_eval,
                                                                 len(data.test_set))
    loader = DataLoader(Subset(data.test_set, range(n_eval)), batch_size=args.batch_size)
    base = regression_metrics(reg, loader, args.device)
    rows: list[dict] = []
    result = {
        "system": args.system, "num_train": args.num_train, "num_test": args.num_test,
        "num_eval": n_eval, "epochs_max": args.epochs,
        "epochs": trainer.current_epoch, "train_steps": timer.steps, "train_seconds": train_s,
        "regression_epochs": reg_epochs, "hidden": args.hidden, "layers": args.layers,
        "k": args.k, "lr": args.lr, "ema": args.ema, "scale": args.scale,
        "prior_init": args.prior_init, "parametrization": args.parametrization,
        "x0_skip": args.x0_skip, "skip_sigma_data": args.skip_sigma_data,
        "lr_gamma": args.lr_gamma, "time_dim": args.time_dim,
        "prior_layers": args.prior_layers, "train_minutes": args.train_minutes,
        "reg_minutes": args.reg_minutes,
        "threads": args.threads,
        "batch_size": args.batch_size, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda"
        else platform.processor() or platform.machine(),
        "train_steps_per_second": timer.steps / max(timer.seconds, 1e-9),
        "regression_train_seconds": reg_s, **base,
        "full_test": full, "samplers": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))  # partial results survive a timeout
    dev_loader = [{k: v.to(args.device) for k, v in b.items()} for b in loader]
    for spec in args.samplers.split(","):
        name, nfe = spec.split(":")
        gen = torch.Generator(device=args.device).manual_seed(0)
        m, _ = forecast_metrics(model, dev_loader, name, int(nfe), args.k, gen, progress=True)
        rows.append({"sampler": name, "nfe": int(nfe), "ade_avg": m["ade_avg"],
                     "fde_avg": m["fde_avg"], "ade_min": m["ade_min"], "fde_min": m["fde_min"],
                     "seconds_per_batch": m["seconds"] / (len(loader) * args.k),
                     "seconds": m["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
        atomic_write_text(out, json.dumps(result, indent=2))
    print(f"\n{args.system}: {args.num_train} train, {n_eval} of {args.num_test} test sampled, "
          f"{result['epochs']} epochs, EGTN {args.hidden}x{args.layers}, K = {args.k}, "
          f"{args.device}")
    print(f"{'method':<28}{'NFE':>6}{'ADE':>8}{'FDE':>8}{'minADE':>8}{'minFDE':>8}{'s/batch':>9}")
    for r in rows:
        print(f"{'GeoTDM ' + r['sampler']:<28}{r['nfe']:>6}{r['ade_avg']:>8.4f}"
              f"{r['fde_avg']:>8.4f}{r['ade_min']:>8.4f}{r['fde_min']:>8.4f}"
              f"{r['seconds_per_batch']:>9.3f}")
    print(f"{'EGTN regression':<28}{1:>6}{base['reg_ade']:>8.4f}{base['reg_fde']:>8.4f}")
    print(f"{'constant velocity':<28}{0:>6}{base['cv_ade']:>8.4f}{base['cv_fde']:>8.4f}")
    print(f"whole test split: regression {full['reg_ade']:.4f}/{full['reg_fde']:.4f}, "
          f"constant velocity {full['cv_ade']:.4f}/{full['cv_fde']:.4f}")
    print(f"training: {result['train_steps_per_second']:.2f} steps/s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
