"""Does an Echo-DND teacher's Gaussian branch learn? ``eps`` against ``v``, per branch, per step.

For each ``--parametrizations`` entry the medical demo config is trained on the offline
``camus_like`` generator (``domaindiff fit --config medical:demo
--data.init_args.generator=camus_like --model.init_args.parametrization=P``, ``--steps`` optimizer
steps, the demo network) and the model is snapshotted at each of ``--at``. Each snapshot is
probed on the first ``--images`` camus_like 32x32 test images, seed 0, no ensemble, no
post-processing, Dice over all pixels of each branch's estimate thresholded at 0.5:

* ``walk``: one dual walk per image (DDIM 25 steps, and the distilled grid with 4 and 1 steps):
  the Gaussian branch's ``(clip(x0) + 1) / 2``, the Bernoulli branch's ``P(m = 1)`` and the
  fused mean (as ``benchmarks/distill_medical_branches.py``);
* ``oneshot``: the EMA network's clean estimates from the true noised masks at integer steps
  ``i`` (Gaussian ``x0`` converted from the prediction and clipped; Bernoulli ``P(m = 1)``), and
  the Gaussian branch's noise error ``mean (eps_hat - eps)^2``.

    DOMAINDIFF_THREADS=1 python benchmarks/medical_parametrization.py --work /tmp/medparam \\
        [--parametrizations eps v] [--steps 2000 500] [--at 250 1000 2000]

Results are written after every snapshot (``--out``, default
``benchmarks/results/medical_parametrization_cpu.json``); a rerun keeps the measured rows and
skips a parametrization whose rows are all there.
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
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "medical")]

from domaindiff.data import atomic_write_text  # noqa: E402

#: the dual walks probed: (sampler, steps)
WALKS = (("ddim", 25), ("distilled", 4), ("distilled", 1))
#: the integer steps of the one-shot estimates
ONESHOT = (50, 200, 500, 800, 999)


def dice(p: torch.Tensor, m: torch.Tensor) -> float:
    """Dice over all pixels of ``p > 0.5`` against the 0/1 mask ``m``."""
    b = (p > 0.5).float()
    return float(2 * (b * m).sum() / (b.sum() + m.sum()).clamp_min(1e-6))


def probe(path: Path, images: torch.Tensor, masks: torch.Tensor) -> dict:
    """Per-branch Dice of the walks and of the one-shot estimates of one checkpoint."""
    from domaindiff.checkpoint import load_checkpoint
    from domaindiff.parametrization import to_x0_eps

    model = load_checkpoint(path)
    row: dict = {"walk": {}, "oneshot": {}}
    for sampler, steps in WALKS:
        out = model.dual_sample(images, steps=steps, sampler=sampler,
                                generator=torch.Generator().manual_seed(0))
        row["walk"][f"{sampler}{steps}"] = {k: dice(out[key], masks) for k, key in
                                            (("gaussian", "gauss"), ("bernoulli", "bern"),
                                             ("fused", "prob"))}
    net = model.ema_network.module if model.ema_network is not None else model.network
    gen, x0, n = torch.Generator().manual_seed(1), 2 * masks - 1, len(masks)
    with torch.no_grad():
        for i in ONESHOT:
            a = model.bern.abar[i]
            t = torch.full((n,), i / model.num_steps)
            eps = torch.randn(x0.shape, generator=gen)
            xg = a.sqrt() * x0 + (1 - a).sqrt() * eps
            xb = model.bern.q_sample(masks, torch.full((n,), i), generator=gen)
            out = net(images, xg, xb, t)
            x0_hat, eps_hat = to_x0_eps(out.eps, model.parametrization, xg, t,
                                        model.processes["mask"])
            row["oneshot"][str(i)] = {"gaussian": dice((x0_hat.clamp(-1, 1) + 1) / 2, masks),
                                      "bernoulli": dice(out.prob, masks),
                                      "eps_mse": float(((eps_hat - eps) ** 2).mean())}
    return row


def train(param: str, steps: int, at: list[int], work: Path) -> float:
    """Fit the demo config with ``parametrization=param``; snapshots ``snap_{step}.ckpt``.

    Returns:
        The fit's CPU seconds.
    """
    import lightning as L

    from domaindiff.cli import lightning_cli
    from domaindiff.demo_utils import fit_args
    from domaindiff.quiet import quiet_third_party

    quiet_third_party()
    work.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(work)  # the demo config's checkpoint folder is relative (resolved when it is built)
    over = ["--data.init_args.generator=camus_like", "--trainer.max_time=null",
            f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false",
            f"--model.init_args.parametrization={param}"]
    try:
        cli = lightning_cli(fit_args("medical:demo", work / "fit", over)[1:], run=False)
    finally:
        os.chdir(cwd)

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            if trainer.global_step in at:
                trainer.save_checkpoint(str(work / f"snap_{trainer.global_step}.ckpt"))
                print(f"{param} step {trainer.global_step}: {time.thread_time() - t0:.0f} CPU s",
                      flush=True)

    cli.trainer.callbacks.append(Snapshot())
    t0 = time.thread_time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return time.thread_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="fits and snapshots")
    ap.add_argument("--parametrizations", nargs="+", default=["eps", "v"],
                    choices=("eps", "v", "x0"))
    ap.add_argument("--steps", nargs="+", type=int, default=[2000, 500],
                    help="optimizer steps, one per parametrization")
    ap.add_argument("--at", nargs="+", type=int, default=[250, 500, 1000, 2000],
                    help="snapshot steps (those up to each fit's --steps)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                    / "medical_parametrization_cpu.json")
    args = ap.parse_args(argv)
    if len(args.steps) != len(args.parametrizations):
        ap.error(f"--steps: one per parametrization ({len(args.parametrizations)}), got "
                 f"{len(args.steps)}")
    args.work, args.out = args.work.resolve(), args.out.resolve()
    torch.set_num_threads(int(os.environ.get("DOMAINDIFF_THREADS", "1")))
    from domaindiff_medical.evaluate import load_split

    images, masks, _, _ = load_split("synthetic", "test", None, 32, args.images, 0,
                                     generator="camus_like")
    result = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), "
                         "shared 2-core host", "torch": torch.__version__,
              "settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": [],
              "fits": {}}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        result["rows"], result["fits"] = old.get("rows", []), old.get("fits", {})
    save = lambda: atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # noqa: E731
    for param, steps in zip(args.parametrizations, args.steps, strict=True):
        at = sorted(s for s in args.at if 0 < s <= steps)
        done = {r["step"] for r in result["rows"] if r["parametrization"] == param}
        if set(at) <= done:
            continue
        work = args.work / param
        result["fits"][param] = {"steps": steps, "cpu_seconds": train(param, steps, at, work),
                                 "command": "domaindiff fit --config medical:demo "
                                            "--data.init_args.generator=camus_like "
                                            f"--trainer.max_time=null --trainer.max_steps={steps}"
                                            f" --model.init_args.parametrization={param}"}
        for step in at:
            if step in done:
                continue
            row = {"parametrization": param, "step": step,
                   **probe(work / f"snap_{step}.ckpt", images, masks)}
            print(param, step, json.dumps(row["walk"]), flush=True)
            result["rows"].append(row)
            save()
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
