"""GDSS benchmark: MMD / validity against network evaluations for S4, PC and the fast samplers.

Trains GraphDiffusion with the paper's configuration (``plugins/graphs/conf/<dataset>.yaml``) for
``--epochs`` epochs, then samples the test-set size (GDSS's protocol) with every sampler at several
NFE budgets over ``--seeds`` seeds, and reports the metrics, training steps per second and
sampling seconds per graph on this machine. Prints a table and writes JSON.

    python benchmarks/graphs.py --dataset community_small --epochs 5000 --device cuda
    python benchmarks/graphs.py --dataset qm9 --epochs 30 --quick     # offline NCI molecules
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs")]  # runs uninstalled too

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs import data as D  # noqa: E402
from domaindiff_graphs.model import GraphDiffusion  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402

CONF = ROOT / "plugins" / "graphs" / "domaindiff_graphs" / "conf"


def samplers_for(opts: dict, quick: bool) -> list[tuple[str, str, int, dict]]:
    """(label, sampler, NFE, options): the paper's 1000-step S4 and PC, then 10x fewer NFE.

    ``s4_fast`` is S4 with :func:`~domaindiff_graphs.solvers.fast_s4_options` (the Langevin snr
    scaled by ``sqrt(1000 / NFE)``, unit corrector noise); ``s4`` at 100 / 50 keeps GDSS's snr.
    """
    pc = {k: v for k, v in opts.items() if k in ("predictor", "corrector", "snr", "scale_eps",
                                                   "eps")}
    snr, eps = opts.get("snr", 0.15), opts.get("eps", 1e-4)
    s4 = {"snr": snr, "scale_eps": opts.get("scale_eps", 0.7), "eps": eps}

    def fast(nfe: int) -> dict:
        return {**fast_s4_options(nfe, snr, 1000), "eps": eps}

    if quick:
        return [("s4", "s4", 200, s4), ("s4_fast", "s4", 20, {**fast_s4_options(20, snr, 200),
                                                             "eps": eps}),
                ("s4", "s4", 20, s4), ("dpm_solver", "dpm_solver", 20, {"order": 2})]
    return [("s4", "s4", 1000, s4), ("gdss_pc", "gdss_pc", 2000, pc),
            ("s4_fast", "s4", 100, fast(100)), ("s4_fast", "s4", 50, fast(50)),
            ("s4", "s4", 100, s4), ("gdss_pc", "gdss_pc", 200, pc),
            ("euler_maruyama", "euler_maruyama", 100, {}),
            ("dpm_solver", "dpm_solver", 100, {"order": 2}),
            ("dpm_solver_pp_2m", "dpm_solver_pp_2m", 100, {}),
            ("deis", "deis", 100, {"order": 3}), ("ddim", "ddim", 100, {})]


LOWER_IS_BETTER = ("mmd", "fcd")


def compare_to_reference(rows: list[dict], ref: dict, keys: list[str]) -> None:
    """Add ``nfe_ratio``, per-metric ``ratio`` to the reference and ``matches_reference``.

    A row matches when every metric is no worse than the reference's mean by more than the two
    rows' seed standard deviations together (lower is better for MMD / FCD, higher for rates).
    """
    for row in rows:
        row["reference"] = f"{ref['label']}@{ref['nfe']}"
        row["nfe_ratio"] = ref["nfe"] / row["nfe"]
        row["ratio"], ok = {}, True
        for k in keys:
            r, v = ref[k], row[k]
            row["ratio"][k] = v / r if r else float("nan")
            slack = ref[k + "_std"] + row[k + "_std"]
            lower = any(tag in k for tag in LOWER_IS_BETTER)
            ok &= (v <= r + slack) if lower else (v >= r - slack)
        row["matches_reference"] = bool(ok)


class StepTimer(L.Callback):
    """Training steps per second (wall clock between the first and the last step)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        step = trainer.global_step
        if step % 250 == 0:
            print(f"step {step}: {self.times[-1] - self.times[0]:.1f}s, "
                  f"loss {float(trainer.callback_metrics.get('train/loss', float('nan'))):.2f}",
                  flush=True)

    def steps_per_second(self) -> float:
        if len(self.times) < 2:
            return float("nan")
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def main(argv: list[str] | None = None) -> dict:
    """Train, sample with every sampler, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="community_small", choices=["community_small", "qm9"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer samplers and smaller budgets")
    ap.add_argument("--num-samples", type=int, default=None,
                    help="graphs per seed (default: the test-set size, as GDSS)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "graphs.json"))
    ap.add_argument("--ckpt-out", default=None, help="also write the trained checkpoint here")
    ap.add_argument("--ckpt-in", default=None,
                    help="evaluate this checkpoint instead of training (e.g. a GPU run's)")
    ap.add_argument("--max-time", default=None,
                    help="stop training after this wall time (Lightning DD:HH:MM:SS)")
    ap.add_argument("--samplers", default=None,
                    help="comma list of sampler:NFE to run instead of the default list "
                         "('none': train only)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: <= 16)")
    ap.add_argument("--ckpt-every", type=int, default=0,
                    help="also keep a checkpoint every this many epochs next to --ckpt-out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or min(torch.get_num_threads(), 16))

    cfg = yaml.safe_load((CONF / f"{args.dataset}.yaml").read_text())
    margs = dict(cfg["model"]["init_args"])
    dargs = dict(cfg["data"]["init_args"])
    if args.dataset == "qm9":
        dargs["source"] = "nci"  # offline: RDKit's NCI molecules under QM9's rules
        dargs["batch_size"] = 128
    L.seed_everything(0)
    dm = (D.CommunitySmall if args.dataset == "community_small" else D.QM9)(**dargs)
    model = GraphDiffusion(**margs)
    timer = StepTimer()
    callbacks: list[L.Callback] = [timer]
    if args.ckpt_every and args.ckpt_out:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=Path(args.ckpt_out).parent,
                                         filename=Path(args.ckpt_out).stem + "-{epoch}",
                                         every_n_epochs=args.ckpt_every, save_top_k=-1))
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1,
                        logger=False, enable_checkpointing=bool(len(callbacks) > 1),
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=callbacks, max_time=args.max_time)
    t0 = time.perf_counter()
    if args.ckpt_in:
        from domaindiff.module import load_checkpoint

        model = load_checkpoint(args.ckpt_in)
        steps_done = int(torch.load(args.ckpt_in, map_location="cpu",
                                    weights_only=True)["global_step"])
    else:
        trainer.fit(model, dm)
        steps_done = trainer.global_step
    train_seconds = time.perf_counter() - t0
    if args.ckpt_out:
        trainer.save_checkpoint(args.ckpt_out)
    model = model.to(torch.device(args.device if args.device != "gpu" else "cuda"))
    model.eval()
    dm.setup()
    n = args.num_samples or len(dm.test_data)
    rows = []
    plan = samplers_for(margs.get("sampler_options", {}), args.quick)
    if args.samplers == "none":
        plan = []
    elif args.samplers:
        by_key = {(lab, str(k)): (smp, o) for lab, smp, k, o in
                  samplers_for(margs.get("sampler_options", {}), False)}
        plan = []
        for item in args.samplers.split(","):
            lab, k = item.split(":")
            smp, o = by_key.get((lab, k), (lab, {}))
            if lab == "s4_fast" and (lab, k) not in by_key:
                o = {**fast_s4_options(int(k), margs["sampler_options"].get("snr", 0.15)),
                     "eps": margs["sampler_options"].get("eps", 1e-4)}
                smp = "s4"
            plan.append((lab, smp, int(k), o))
    print(f"trained {steps_done} steps in {train_seconds:.1f}s", flush=True)
    keys: list[str] = []
    for label, sampler, nfe, opts in plan:
        per_seed, secs = [], 0.0
        for seed in range(args.seeds):
            gen = torch.Generator(device=model.device).manual_seed(seed)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.sample(n, sampler=sampler, steps=nfe, generator=gen, **opts)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            secs += time.perf_counter() - t
            out = {k: v.cpu() for k, v in out.items()}
            per_seed.append(metrics_of(model, dm, out))
        keys = list(per_seed[0].keys())
        row = {"label": label, "sampler": sampler, "nfe": nfe, "options": opts,
               "seconds_per_graph": secs / (n * args.seeds)}
        for k in keys:
            vals = [m[k] for m in per_seed]
            row[k] = float(np.mean(vals))
            row[k + "_std"] = float(np.std(vals))
        rows.append(row)
        print(fmt_row(row, keys), flush=True)
    if rows:
        ref = next((r for r in rows if r["label"] == "s4" and r["nfe"] == 1000), rows[0])
        compare_to_reference(rows, ref, keys)
        print(f"\nagainst {rows[0]['reference']} (ratio = metric / reference metric):")
        for row in rows:
            ratios = "  ".join(f"{k}={row['ratio'][k]:.2f}" for k in keys)
            print(f"{row['label']:<17}{row['nfe']:>5}  NFE x{1 / row['nfe_ratio']:.2f}  "
                  f"{ratios}  matches={row['matches_reference']}")
    result = {
        "dataset": args.dataset, "epochs": args.epochs, "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device in ("cuda", "gpu")
                        else platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "train_steps": steps_done, "train_seconds": train_seconds,
        "train_steps_per_second": timer.steps_per_second(), "num_samples": n,
        "seeds": args.seeds, "paper": PAPER.get(args.dataset, {}), "rows": rows,
        "command": "python benchmarks/graphs.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
    }
    out_path = Path(args.out)
    atomic_write_text(out_path, json.dumps(result, indent=2))
    print(f"train: {steps_done} steps in {train_seconds:.1f}s "
          f"({result['train_steps_per_second']:.2f} steps/s); wrote {out_path}")
    return result


PAPER = {"community_small": {"degree_mmd": 0.045, "clustering_mmd": 0.086, "orbit_mmd": 0.007},
         "qm9": {"validity_wo_correction": 0.9572, "nspdk_mmd": 0.003, "fcd": 2.900,
                 "uniqueness": 0.9846, "novelty": 0.8627}}


def metrics_of(model, dm, out) -> dict:
    """The dataset's metrics for one batch of samples."""
    if dm.is_molecule:
        from domaindiff_graphs.metrics import molecule_metrics
        from domaindiff_graphs.mol import decode_molecules

        mols, ok = decode_molecules(out["x"], out["adj"], out["mask"], dm.atom_types)
        try:
            import eden  # noqa: F401
            test_graphs = dm.test_graphs()
        except ImportError:
            test_graphs = None
        return molecule_metrics(mols, ok, dm.train_smiles(), test_graphs, dm.test_smiles())
    from domaindiff_graphs.metrics import graph_metrics

    return graph_metrics(dm.test_graphs(), model.decode(out))


def fmt_row(row: dict, keys: list[str]) -> str:
    """One table line."""
    cells = [f"{row['label']:<17}", f"{row['nfe']:>5}"]
    cells += [f"{k}={row[k]:.4f}±{row[k + '_std']:.4f}" for k in keys]
    cells.append(f"s/graph={row['seconds_per_graph']:.4f}")
    return "  ".join(cells)


if __name__ == "__main__":
    main()
