"""GeoTDM benchmark: ADE/FDE against network evaluations, next to two baselines.

Trains GeoTDM (forecasting, learnable prior) on an N-body split for ``--epochs`` epochs, trains an
EGTN regression baseline (same network, deterministic MSE forecaster) on the same data, then
forecasts the test split with the paper's ancestral sampler and with fast samplers at ~10x fewer
network evaluations. Reports ADE/FDE (average and minimum over K), constant velocity, training
steps per second and seconds per sampled batch on this machine. Prints a table, writes JSON.

    python benchmarks/trajectories.py --epochs 3 --num-train 256 --num-test 64      # quick CPU
    python benchmarks/trajectories.py --epochs 200 --device cuda --samplers ancestral:1000,ddim:100
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
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "trajectories")]

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_trajectories.data import NBody  # noqa: E402
from domaindiff_trajectories.evaluate import forecast_metrics  # noqa: E402
from domaindiff_trajectories.metrics import ade_fde, constant_velocity  # noqa: E402
from domaindiff_trajectories.model import GeoTDM  # noqa: E402
from domaindiff_trajectories.networks import EGTN  # noqa: E402


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


class EGTNRegressor(torch.nn.Module):
    """Deterministic baseline: EGTN on [condition, last frame repeated] -> predicted frames."""

    def __init__(self, node_features: int, hidden: int, layers: int, pred_frames: int) -> None:
        super().__init__()
        self.egtn = EGTN(node_features + 1, hidden, layers, node_features)
        self.pred_frames = pred_frames

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cond, h, mask = batch["cond"], batch["h"], batch["mask"]
        tc = cond.shape[2]
        xin = torch.cat([cond, cond[:, :, -1:].expand(-1, -1, self.pred_frames, -1)], 2)
        flag = torch.zeros(*xin.shape[:3], 1, device=xin.device)
        flag[:, :, :tc] = 1
        feats = torch.cat([h[:, :, None].expand(-1, -1, xin.shape[2], -1), flag], -1)
        _, x = self.egtn(feats, xin, mask, h[:, :, None] * h[:, None])
        return x[:, :, tc:]


def train_regressor(data: NBody, hidden: int, layers: int, epochs: int, lr: float,
                    device: str) -> tuple[EGTNRegressor, float]:
    """Train the regression baseline with MSE; returns it and its training seconds."""
    torch.manual_seed(0)
    model = EGTNRegressor(1, hidden, layers, data.pred_frames).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in data.train_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = ((model(batch) - batch["x"]) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return model, time.perf_counter() - t0


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
    p.add_argument("--samplers", default="ancestral:1000,ancestral:100,ddim:100,"
                                         "dpm_solver_pp_2m:50",
                   help="comma list of sampler:NFE")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trajectories.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    data = NBody(args.system, num_train=args.num_train, num_val=args.num_val,
                 num_test=args.num_test, batch_size=args.batch_size)
    data.setup()
    model = GeoTDM(hidden=args.hidden, layers=args.layers, lr=args.lr, ema_decay=0.999)
    timer = _StepTimer()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if args.device == "cuda"
                        else "cpu", devices=1, gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], limit_val_batches=0)
    trainer.fit(model, data.train_dataloader())
    model = model.to(args.device).eval()
    reg, reg_s = train_regressor(data, args.hidden, args.layers, args.epochs, args.lr,
                                 args.device)
    loader = DataLoader(data.test_set, batch_size=args.batch_size)
    base = regression_metrics(reg, loader, args.device)
    rows: list[dict] = []
    result = {
        "system": args.system, "num_train": args.num_train, "num_test": args.num_test,
        "epochs": args.epochs, "hidden": args.hidden, "layers": args.layers, "k": args.k,
        "batch_size": args.batch_size, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda"
        else platform.processor() or platform.machine(),
        "train_steps_per_second": timer.steps / max(timer.seconds, 1e-9),
        "regression_train_seconds": reg_s, **base, "samplers": rows,
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
                     "seconds_per_batch": m["seconds"] / (len(loader) * args.k)})
        print(json.dumps(rows[-1]), flush=True)
        atomic_write_text(out, json.dumps(result, indent=2))
    print(f"\n{args.system}: {args.num_train} train / {args.num_test} test, {args.epochs} epochs, "
          f"EGTN {args.hidden}x{args.layers}, K = {args.k}, {args.device}")
    print(f"{'method':<28}{'NFE':>6}{'ADE':>8}{'FDE':>8}{'minADE':>8}{'minFDE':>8}{'s/batch':>9}")
    for r in rows:
        print(f"{'GeoTDM ' + r['sampler']:<28}{r['nfe']:>6}{r['ade_avg']:>8.4f}"
              f"{r['fde_avg']:>8.4f}{r['ade_min']:>8.4f}{r['fde_min']:>8.4f}"
              f"{r['seconds_per_batch']:>9.3f}")
    print(f"{'EGTN regression':<28}{1:>6}{base['reg_ade']:>8.4f}{base['reg_fde']:>8.4f}")
    print(f"{'constant velocity':<28}{0:>6}{base['cv_ade']:>8.4f}{base['cv_fde']:>8.4f}")
    print(f"training: {result['train_steps_per_second']:.2f} steps/s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
