"""An evaluation-app base that a plugin fills in, and the generic ``domaindiff eval <plugin>``.

Every evaluation app does the same work around the part that knows its domain: refuse bad
settings, load the checkpoint safely, draw the samples in batches with a seeded generator, count
the network evaluations, score, write the samples, the pictures and last the metrics JSON (every
file atomically). :class:`EvalApp` does that work; a plugin overrides the hooks it needs:

* :meth:`~EvalApp.check` (its settings), :meth:`~EvalApp.prepare` (what sampling needs from the
  data, once the model is loaded), :meth:`~EvalApp.count` (how many samples: ``num_samples``,
  or e.g. the size of the test split);
* :meth:`~EvalApp.reference_batches`, :meth:`~EvalApp.sample`, :meth:`~EvalApp.metrics`,
  :meth:`~EvalApp.update`, :meth:`~EvalApp.score` (sampling and scoring);
* :meth:`~EvalApp.stem`, :meth:`~EvalApp.title`, :meth:`~EvalApp.save` (the samples in the
  domain's own file formats) and :meth:`~EvalApp.plot` (returns one figure, or several by file
  prefix; the driver saves them as ``<prefix>_<stem>.png``);

and exposes a Hydra entry point from its ``evaluate`` module::

    # my_plugin/evaluate.py
    from domaindiff.evaluation import EvalApp

    class MyEval(EvalApp):
        def score(self, model, samples, metrics, cfg):
            return {"mean": float(samples["x"].mean())}

    main = MyEval("my_plugin").hydra_main(Path(__file__).parent / "conf", "eval")

with ``conf/eval.yaml`` starting ``defaults: [domaindiff_eval_base, _self_]`` (the base settings
below) and adding the plugin's own keys; without a config, ``hydra_main()`` uses the base alone.

``domaindiff eval <plugin>`` for a plugin without an ``evaluate`` module runs the base app
itself: it samples, scores with the model's own ``configure_metrics()``/``update_metrics``
against the validation batches of the datamodule the run's ``config.yaml`` names (or
``data=<class path>``), and otherwise writes the samples and their NFE only.

Settings (``key=value``, Hydra; ``--multirun sampler=a,b steps=10,20`` sweeps):
``ckpt`` (required), ``sampler`` and ``steps`` (default: the model's), ``num_samples``,
``batch_size`` (default: all at once, or the data's batch size), ``seed``, ``out_dir``,
``threads`` (torch CPU threads; default torch's), ``trust_checkpoint``, ``sampler_options`` (a
dict), ``data`` (``auto``: the run's config.yaml; ``none``; or a DataModule class path) and
``data_args`` (its init arguments).

In ``out_dir``, for ``<stem>`` = :meth:`EvalApp.stem` (default ``<sampler>_<steps>``):
``samples_<stem>.pt`` (:meth:`EvalApp.save`), ``samples_<stem>.png`` (:meth:`EvalApp.plot`) and
``metrics_<stem>.json`` last, naming the files written before it under ``files``.

From Python, ``app.run(cfg)`` does what the command line does and ``app.evaluate(model, cfg)``
the same evaluation of a loaded model in memory (nothing written; for demos and benchmarks);
``app.settings(cfg)`` fills ``cfg`` in from the base settings and the app's ``eval.yaml``
(:attr:`EvalApp.config_file`, set by :meth:`EvalApp.hydra_main` or by the subclass).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from domaindiff.module import DiffusionModule

__all__ = ["EvalApp", "base_config", "default_main"]

State = dict[str, Tensor]


def base_config(plugin: str = "plugin") -> dict[str, Any]:
    """The settings every evaluation app has, with their defaults (``ckpt`` is required)."""
    return {
        "ckpt": "???",
        "sampler": None,
        "steps": None,
        "num_samples": 64,
        "batch_size": None,
        "seed": 0,
        "out_dir": f"eval_out/{plugin}",
        "threads": None,
        "trust_checkpoint": False,
        "sampler_options": {},
        "data": "auto",
        "data_args": {},
        "hydra": {"run": {"dir": "${out_dir}/hydra/${now:%Y%m%d-%H%M%S}"},
                  "sweep": {"dir": "${out_dir}/hydra-multirun/${now:%Y%m%d-%H%M%S}"},
                  "job": {"chdir": False}},
    }


class EvalApp:
    """Base of an evaluation app; subclasses override the hooks that know their domain.

    Args:
        plugin: the plugin's name (default output directory ``eval_out/<plugin>``, titles).
    """

    #: resolution of the PNGs the driver writes
    dpi: int = 100

    def __init__(self, plugin: str = "plugin") -> None:
        self.plugin = plugin
        #: the plugin's eval config (set by :meth:`hydra_main`): :meth:`settings` reads its
        #: defaults, so ``run(cfg)`` from Python gets the same defaults as the command line
        self.config_file: Path | None = None

    # --- hooks ----------------------------------------------------------------------------------
    def check(self, cfg: Mapping[str, Any]) -> None:
        """Refuse bad settings before any work (counts, sampler name).

        Raises:
            ValueError: naming the setting and what was expected.
        """
        from domaindiff.cli import check_counts
        from domaindiff.samplers import get_sampler

        ckpt = cfg.get("ckpt")
        if ckpt in (None, "", "???"):
            raise ValueError("ckpt: required, e.g. ckpt=lightning_logs/version_0/checkpoints/"
                             "last.ckpt")
        check_counts(cfg, positive=("steps", "num_samples", "batch_size", "threads"),
                     nonnegative=("seed",),
                     optional=("steps", "num_samples", "batch_size", "threads"))  # see count()
        if cfg.get("sampler") is not None:
            get_sampler(str(cfg["sampler"]))
        if not isinstance(cfg.get("sampler_options") or {}, Mapping):
            raise ValueError(f"sampler_options={cfg.get('sampler_options')!r}: expected a "
                             "mapping, e.g. +sampler_options.eta=1.0")

    def load(self, cfg: Mapping[str, Any]) -> DiffusionModule:
        """The model of ``cfg.ckpt`` (weights-only unless ``trust_checkpoint``; class allow-list)."""
        from domaindiff.checkpoint import load_checkpoint

        return load_checkpoint(str(cfg["ckpt"]), trust=bool(cfg.get("trust_checkpoint", False)))

    def prepare(self, model: DiffusionModule, cfg: Mapping[str, Any]) -> None:
        """Set up what sampling needs once the model is loaded (default: nothing).

        E.g. read the evaluation data, refuse a model that does not fit it, or give the model
        statistics of the data an old checkpoint lacks.
        """

    def count(self, model: DiffusionModule, cfg: Mapping[str, Any]) -> int:
        """How many samples to draw (default: ``num_samples``).

        Raises:
            ValueError: ``num_samples`` is null and the app has no count of its own.
        """
        if cfg.get("num_samples") is None:
            raise ValueError("num_samples=None: expected a positive integer")
        return int(cfg["num_samples"])

    def reference_batches(self, model: DiffusionModule,
                          cfg: Mapping[str, Any]) -> Iterator[Any] | None:
        """Data batches to sample against (templates, conditions, metric targets), or None.

        Default: the validation loader of the datamodule :meth:`datamodule` builds.
        """
        dm = self.datamodule(model, cfg)
        if dm is None:
            return None
        dm.setup("validate")
        return iter(dm.val_dataloader())

    def datamodule(self, model: DiffusionModule, cfg: Mapping[str, Any]) -> Any | None:
        """The datamodule ``cfg.data`` names (``auto``: the run's ``config.yaml``), or None."""
        spec = cfg.get("data", "auto")
        if spec is None or str(spec).lower() in ("none", "null", ""):
            return None
        args = dict(cfg.get("data_args") or {})
        if str(spec) == "auto":
            found = _run_config_data(Path(str(cfg["ckpt"])))
            if found is None:
                return None
            spec, saved = found
            args = {**saved, **args}
        return _build_datamodule(str(spec), args)

    def sample(self, model: DiffusionModule, cfg: Mapping[str, Any], n: int, batch: Any,
               generator: torch.Generator) -> State:
        """Draw ``n`` samples (from ``batch``'s template when there is one)."""
        opts = dict(cfg.get("sampler_options") or {})
        return model.sample(n, sampler=cfg.get("sampler"), steps=cfg.get("steps"),
                            generator=generator, batch=batch, **opts)

    def metrics(self, model: DiffusionModule, cfg: Mapping[str, Any]) -> Any | None:
        """A fresh metric collection (default: the model's ``configure_metrics()``)."""
        return model.configure_metrics()

    def update(self, model: DiffusionModule, metrics: Any, samples: State, batch: Any) -> None:
        """Feed one sampled batch to the metrics (default: the model's ``update_metrics``)."""
        if metrics is not None and batch is not None:
            model.update_metrics(metrics, samples, batch)
            self._updated = True

    def score(self, model: DiffusionModule, samples: State, metrics: Any,
              cfg: Mapping[str, Any]) -> dict[str, float]:
        """The scores of all ``samples`` (default: the computed metrics, as floats)."""
        if metrics is None or not getattr(self, "_updated", False):
            return {}
        values = metrics.compute()
        return {str(k): float(v) for k, v in _flatten(values).items()}

    def stem(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """The common part of the output file names (default ``<sampler>_<steps>``)."""
        return f"{result['sampler']}_{result['steps']}"

    def title(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """The pictures' title: the plugin, checkpoint, sampler, steps, NFE and sample count."""
        return (f"{self.plugin}: {Path(str(cfg['ckpt'])).name}, {result['sampler']}, "
                f"{result['steps']} steps ({result['nfe']} NFE), {result['num_samples']} samples")

    def save(self, model: DiffusionModule, samples: State, cfg: Mapping[str, Any], out: Path,
             stem: str) -> list[Path]:
        """Write the samples into ``out``; returns the files (default ``samples_<stem>.pt``)."""
        path = out / f"samples_{stem}.pt"
        model.save_samples(samples, path)
        return [path]

    def plot(self, model: DiffusionModule, samples: State, references: list[Any],
             cfg: Mapping[str, Any], title: str) -> Figure | Mapping[str, Figure | None] | None:
        """Pictures of the samples, unsaved: the driver writes them (atomically) and closes them.

        Returns:
            a figure (saved as ``samples_<stem>.png``), figures by file prefix (``{"fan": fig}``
            is saved as ``fan_<stem>.png``; None values are skipped) or None (no picture).
            Default: per-component value histograms beside the data's.
        """
        return _histograms(model, samples, references, title)

    # --- driver ---------------------------------------------------------------------------------
    def settings(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``cfg`` over the plugin's eval config over :func:`base_config`, as a plain dict.

        Hydra's ``defaults`` list and ``hydra`` section are dropped.
        """
        from omegaconf import OmegaConf

        layers: list[Any] = [base_config(self.plugin)]
        if self.config_file is not None and self.config_file.is_file():
            layers.append(OmegaConf.load(self.config_file))
        layers.append(cfg)
        plain = [OmegaConf.to_container(c, resolve=False) if OmegaConf.is_config(c) else c
                 for c in layers]
        merged = OmegaConf.merge(*({k: v for k, v in dict(c).items()  # type: ignore[arg-type]
                                    if k not in ("defaults", "hydra")} for c in plain))
        resolved = OmegaConf.to_container(merged, resolve=True)
        return {str(k): v for k, v in dict(resolved).items()}  # type: ignore[arg-type]

    def run(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Check, load, :meth:`evaluate`, :meth:`write`; returns the metrics JSON's content."""
        cfg = self.settings(cfg)
        self.check(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        model = self.load(cfg)
        cfg = _model_defaults(model, cfg)
        result, samples, refs = self.evaluate(model, cfg)
        return self.write(model, cfg, result, samples, refs)

    def evaluate(self, model: DiffusionModule, cfg: Mapping[str, Any],
                 generator: torch.Generator | None = None
                 ) -> tuple[dict[str, Any], State, list[Any]]:
        """Sample and score a loaded model, writing nothing (the in-memory half of :meth:`run`).

        ``generator``: the noise generator (default: a CPU one seeded with ``cfg.seed``).

        Returns:
            the result (run facts and scores), the samples (concatenated over the sampling
            calls) and the data batches they were drawn against.
        """
        cfg = _model_defaults(model, cfg)
        self.prepare(model, cfg)
        cfg = {**cfg, "num_samples": self.count(model, cfg)}
        gen = generator or torch.Generator().manual_seed(int(cfg["seed"]))
        metrics = self.metrics(model, cfg)
        parts, refs, nfes, seconds = self.draw(model, cfg, metrics, gen)
        samples = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        n = int(cfg["num_samples"])
        result: dict[str, Any] = {
            "plugin": self.plugin, "ckpt": str(cfg.get("ckpt")), "sampler": cfg["sampler"],
            "steps": cfg["steps"], "nfe": max(nfes), "nfe_total": sum(nfes),
            "batches": len(nfes), "num_samples": n, "seed": int(cfg["seed"]),
            "seconds": seconds, "seconds_per_sample": seconds / n,
        }
        result.update(self.score(model, samples, metrics, cfg))
        return result, samples, refs

    def write(self, model: DiffusionModule, cfg: Mapping[str, Any], result: dict[str, Any],
              samples: State, references: list[Any]) -> dict[str, Any]:
        """Write the samples (:meth:`save`), pictures (:meth:`plot`) and last the JSON.

        The JSON lists the files written before it under ``files`` (names in ``out_dir``): when
        it exists, they are complete. Returns ``result`` with ``files``.
        """
        from domaindiff.data import atomic_write_text
        from domaindiff.plotting import save_figure

        out = Path(str(cfg["out_dir"]))
        out.mkdir(parents=True, exist_ok=True)
        stem = self.stem(cfg, result)
        files = list(self.save(model, samples, cfg, out, stem))
        figs = self.plot(model, samples, references, cfg, self.title(cfg, result))
        named = figs if isinstance(figs, Mapping) else {"samples": figs}
        for prefix, fig in named.items():
            if fig is not None:
                files.append(save_figure(fig, out / f"{prefix}_{stem}.png", dpi=self.dpi))
        result = {**result, "files": [Path(p).name for p in files]}
        atomic_write_text(out / f"metrics_{stem}.json",
                          json.dumps(result, indent=2, default=str))
        print(json.dumps(result, indent=2, default=str))
        return result

    def draw(self, model: DiffusionModule, cfg: Mapping[str, Any], metrics: Any,
             gen: torch.Generator) -> tuple[list[State], list[Any], list[int], float]:
        """Sample ``num_samples`` in batches (the loop of :meth:`evaluate`; a tqdm bar).

        Returns:
            the parts, the data batches, each call's NFE and the seconds spent sampling.
        """
        from tqdm.auto import tqdm

        parts: list[State] = []
        refs: list[Any] = []
        nfes: list[int] = []
        seconds = 0.0
        bar = tqdm(total=int(cfg["num_samples"]), desc=f"{self.plugin}: sampling", unit="sample",
                   disable=None)  # None: no bar where stderr is not a terminal (logs, tests)
        for n, batch in self._chunks(model, cfg):
            t0 = time.perf_counter()
            part = self.sample(model, cfg, n, batch, gen)
            seconds += time.perf_counter() - t0
            bar.update(n)
            self.update(model, metrics, part, batch)
            parts.append({k: v.detach().cpu() for k, v in part.items()})
            if batch is not None:
                refs.append(batch)
            nfes.append(int(model.last_nfe))
        bar.close()
        return parts, refs, nfes, seconds

    def _chunks(self, model: DiffusionModule,
                cfg: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
        """``(n, data batch or None)`` per sampling call: ``num_samples`` in ``batch_size`` pieces.

        With data, each sampling call copies its template from (a slice of) one data batch.
        """
        total, size = int(cfg["num_samples"]), cfg.get("batch_size")
        step = total if size is None else int(size)
        batches = self.reference_batches(model, cfg)
        drawn = 0
        if batches is None:
            while drawn < total:
                n = min(step, total - drawn)
                yield n, None
                drawn += n
            return
        for batch in batches:
            length = _batch_len(model, batch)
            for start in range(0, length, step):
                n = min(step, length - start, total - drawn)
                yield n, batch if (start == 0 and n == length) else \
                    _slice(batch, start, start + n, cfg)
                drawn += n
                if drawn >= total:
                    return
        # the data ran out: say so rather than repeat it or stop short
        raise ValueError(f"num_samples={total}: the validation data holds only {drawn} "
                         "examples; lower num_samples or pass data=none")

    def hydra_main(self, config_path: str | Path | None = None,
                   config_name: str | None = None) -> Callable[[], None]:
        """A Hydra entry point running this app (``evaluate.main`` of a plugin).

        Args:
            config_path: directory of the plugin's eval config (absolute, e.g.
                ``Path(__file__).parent / "conf"``); None: the base settings only.
            config_name: the config's name there (e.g. ``"eval"``). Its keys are merged over
                :func:`base_config`; start it with ``defaults: [domaindiff_eval_base, _self_]``
                to let the command line override the base settings it does not repeat.
        """
        import hydra
        from hydra.core.config_store import ConfigStore

        from domaindiff.cli import report_errors

        name = config_name
        if config_path is not None and config_name is not None:
            self.config_file = Path(config_path).resolve() / f"{config_name}.yaml"
        store = ConfigStore.instance()
        # a plugin's eval.yaml starts with ``defaults: [domaindiff_eval_base, _self_]``
        store.store(name="domaindiff_eval_base", node=base_config(self.plugin))
        if config_path is None:
            name = f"domaindiff_eval_{self.plugin}"
            store.store(name=name, node=base_config(self.plugin))
        app = self

        @hydra.main(version_base=None, config_path=None if config_path is None
                    else str(Path(config_path).resolve()), config_name=name)
        @report_errors
        def main(cfg: Any) -> None:
            app.run(cfg)

        return main


def default_main(plugin: str) -> Callable[[], None]:
    """The generic ``domaindiff eval <plugin>`` of a plugin that ships no ``evaluate`` module."""
    return EvalApp(plugin).hydra_main()


# --- helpers ------------------------------------------------------------------------------------
def _model_defaults(model: DiffusionModule, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``sampler`` and ``steps`` filled in from the model where they are null."""
    return {**cfg, "sampler": str(cfg.get("sampler") or model.default_sampler),
            "steps": int(cfg.get("steps") or model.sampling_steps)}


def _batch_len(model: DiffusionModule, batch: Any) -> int:
    state = model.batch_to_state(batch)
    key = next((k for k in model.processes if k in state), next(iter(state)))
    return int(state[key].shape[0])


def _slice(batch: Any, start: int, stop: int, cfg: Mapping[str, Any]) -> Any:
    """Rows ``start:stop`` of a tensor batch, or of each tensor of a tuple, list or dict batch.

    Raises:
        ValueError: the batch is of another kind (then ``batch_size`` must not split it).
    """
    if torch.is_tensor(batch):
        return batch[start:stop]
    if isinstance(batch, (tuple, list)) and all(torch.is_tensor(b) for b in batch):
        return type(batch)(b[start:stop] for b in batch)
    if isinstance(batch, Mapping) and all(torch.is_tensor(b) for b in batch.values()):
        return {k: v[start:stop] for k, v in batch.items()}
    raise ValueError(f"batch_size={cfg.get('batch_size')}: cannot split a data batch of type "
                     f"{type(batch).__name__}; leave batch_size unset (the data's batch size)")


def _flatten(values: Any, prefix: str = "") -> dict[str, Tensor]:
    if isinstance(values, Mapping):
        out: dict[str, Tensor] = {}
        for k, v in values.items():
            out.update(_flatten(v, f"{prefix}{k}/" if isinstance(v, Mapping) else f"{prefix}{k}"))
        return out
    return {prefix.rstrip("/") or "metric": values}


def _run_config_data(ckpt: Path) -> tuple[str, dict[str, Any]] | None:
    """The ``data`` class path and init args of the ``config.yaml`` LightningCLI wrote for the run.

    The checkpoint sits in ``<run>/checkpoints/``; LightningCLI writes ``<run>/config.yaml``.
    """
    import yaml

    for where in (ckpt.parent.parent / "config.yaml", ckpt.parent / "config.yaml"):
        if not where.is_file():
            continue
        try:
            saved = yaml.safe_load(where.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{where}: not valid YAML ({str(err).splitlines()[0]}); pass "
                             "data=none or data=<DataModule class path>") from None
        data = saved.get("data") if isinstance(saved, Mapping) else None
        if isinstance(data, Mapping) and isinstance(data.get("class_path"), str):
            return data["class_path"], dict(data.get("init_args") or {})
        return None
    return None


def _build_datamodule(class_path: str, args: Mapping[str, Any]) -> Any:
    """Build the DataModule ``class_path`` names, if an installed plugin (or the core) exports it.

    Raises:
        ValueError: the class is not a LightningDataModule of domaindiff or a registered plugin,
            or its arguments do not fit.
    """
    import importlib

    import lightning as L

    from domaindiff.plugins import registered

    packages = {"domaindiff"} | {ep.value.split(":")[0].split(".")[0]
                                 for ep in registered().values()}
    module_name, _, cls_name = class_path.rpartition(".")
    if not module_name or module_name.split(".")[0] not in packages:
        raise ValueError(f"data={class_path!r}: expected the class path of a DataModule of "
                         f"domaindiff or an installed plugin ({', '.join(sorted(packages))})")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"data={class_path!r}: cannot import it ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise ValueError(f"data={class_path!r}: not a LightningDataModule")
    try:
        return cls(**args)
    except TypeError as err:
        raise ValueError(f"data_args for {class_path}: {err}") from None


def _histograms(model: DiffusionModule, samples: State, references: list[Any],
                title: str) -> Figure | None:
    """One histogram per sampled component: generated values beside the data's."""
    from domaindiff.plotting import pyplot

    keys = [k for k in model.processes if k in samples and samples[k].is_floating_point()]
    if not keys:
        return None
    ref_states = [model.batch_to_state(b) for b in references]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        gen = samples[key].flatten().float()
        ref = [s[key].flatten().float() for s in ref_states if key in s]
        both = torch.cat([gen, *ref])
        bins = torch.linspace(float(both.min()), float(both.max()) + 1e-6,
                              max(10, min(60, int(math.sqrt(both.numel())))) + 1).numpy()
        if ref:  # the same bins for both, so the bars compare
            ax.hist(torch.cat(ref).numpy(), bins=bins, alpha=0.5, density=True,
                    label="validation data")
        ax.hist(gen.numpy(), bins=bins, alpha=0.5, density=True, label="generated")
        ax.set_xlabel(f"value of {key!r}")
        ax.set_ylabel("density")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
