"""Import the GDSS authors' released checkpoints (``gdss_<dataset>.pth``) as domaindiff checkpoints.

A GDSS checkpoint is a ``torch.save`` zip archive whose pickle holds a dict with ``model_config``
(an ``easydict.EasyDict`` of the whole config), ``params_x`` / ``params_adj`` (the networks'
constructor arguments), ``x_state_dict`` / ``adj_state_dict`` and ``ema_x`` / ``ema_adj``
(``decay``, ``num_updates``, ``shadow_params``), with storages saved on CUDA.

Safety: the pickle is read by :class:`_GDSSUnpickler`, an allow-list unpickler that can run no
code. The only globals it resolves are torch's tensor rebuild functions (replaced by local
re-implementations that only slice the archive's raw bytes), torch storage type names (mapped to
dtypes), ``collections.OrderedDict``, a few plain builtins and ``easydict.EasyDict`` (mapped to a
plain dict; ``easydict`` is never imported). Any other global (``os.system``, ...) is refused
before it is looked up, with one line naming the file and the global. Storages are read from the
archive onto the CPU whatever device they were saved on.

Conversion (:func:`convert`): the matching :class:`~domaindiff_graphs.model.GraphDiffusion` is
built from the config (SDEs from ``config.sde.x`` / ``config.sde.adj``, network sizes from
``params_x`` / ``params_adj``, training settings from ``config.train``, the sampler settings of
``config.sampler`` / ``config.sample`` as the model's default sampler), and the weights are loaded
strictly after three renames: ``.linears.`` -> ``.layers.`` (and a one-layer MLP's ``.linear.`` ->
``.layers.0.``), ``gnn_q/k/v`` -> ``q/k/v``, and each dense GCN's ``weight`` (in x out) transposed
into PyG's ``lin.weight`` (out x in). EMA shadows (a list in the order of the network's
parameters) are mapped by that order onto the same names and loaded into the EMA network; the
model samples with them when ``config.sample.use_ema`` says so (GDSS: ENZYMES and grid).
"""

from __future__ import annotations

import builtins
import collections
import hashlib
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

CLASS_PATH = "domaindiff_graphs.model.GraphDiffusion"

#: torch storage class names -> dtype (``torch.FloatStorage`` etc. as pickled by ``torch.save``)
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_SAFE_BUILTINS = ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bool",
                  "complex", "bytes", "bytearray", "slice", "range")
_MOLECULES = {"QM9": "qm9", "ZINC250k": "zinc250k"}
#: the GDSS authors' released generic-graph checkpoints, relative to their ``checkpoints/`` folder
RELEASED_CHECKPOINTS = {"community_small": "community_small/gdss_community_small.pth",
                        "ego_small": "ego_small/gdss_ego_small.pth", "grid": "grid/gdss_grid.pth",
                        "ENZYMES": "ENZYMES/gdss_enzymes.pth"}


class GDSSImportError(ValueError):
    """A GDSS checkpoint that cannot be read or converted (the message names the file)."""


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _StorageType:
    """Stands for a ``torch.<X>Storage`` class named in the pickle: only its dtype is kept."""

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _EasyDict(dict):
    """``easydict.EasyDict`` read as a plain dict (its pickled ``__dict__`` state is dropped)."""

    def __setstate__(self, state: Any) -> None:
        if state is not None and not isinstance(state, dict):
            raise pickle.UnpicklingError("EasyDict state is not a dict")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> Tensor:
    """A CPU tensor viewing ``storage`` (a flat tensor read from the archive); bounds checked."""
    if not isinstance(storage, Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("tensor rebuild: storage is not an archive record")
    ints = [offset, *size, *stride]
    if not all(type(v) is int for v in ints) or len(size) != len(stride):
        raise pickle.UnpicklingError("tensor rebuild: size/stride/offset are not integers")
    hooks = rest[1] if len(rest) > 1 else None
    if hooks:
        raise pickle.UnpicklingError("tensor rebuild: backward hooks are not allowed")
    try:
        return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()
    except RuntimeError as err:
        raise pickle.UnpicklingError(f"tensor rebuild: out of the storage's bounds ({err})") \
            from None


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None) -> Tensor:
    """A pickled ``nn.Parameter`` read as its plain tensor."""
    if not isinstance(data, Tensor) or hooks:
        raise pickle.UnpicklingError("parameter rebuild: not a tensor")
    return data


def _allowed(module: str, name: str) -> Any:
    """The object an allow-listed global stands for, or None."""
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
        return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
        return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name)
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module == "easydict" and name == "EasyDict":
        return _EasyDict
    if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
        return getattr(builtins, name)
    return None


class _GDSSUnpickler(pickle.Unpickler):
    """Allow-list unpickler for a ``torch.save`` zip archive (see the module docstring)."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, kind.dtype, numel)
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> Tensor:
        record = f"{self.prefix}/data/{key}"
        itemsize = torch.empty(0, dtype=dtype).element_size()
        try:
            size = self.archive.getinfo(record).file_size
        except KeyError:
            raise pickle.UnpicklingError(f"storage record {record} is missing") from None
        if size != numel * itemsize:  # checked before anything is decompressed
            raise pickle.UnpicklingError(f"storage record {record} holds {size} bytes, "
                                         f"expected {numel} x {itemsize}")
        raw = self.archive.read(record)
        if len(raw) != numel * itemsize:
            raise pickle.UnpicklingError(f"storage record {record} holds {len(raw)} bytes, "
                                         f"expected {numel} x {itemsize}")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype)


def _plain(value: Any) -> Any:
    """EasyDicts and OrderedDicts as plain dicts, tuples kept, all the way down."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def read_gdss_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a GDSS ``.pth`` safely (no code runs) into plain dicts, lists and CPU tensors.

    Raises:
        GDSSImportError: missing, truncated or corrupt file, a refused global, not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise GDSSImportError(f"{path}: no such GDSS checkpoint file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise GDSSImportError(f"{path}: not a torch.save zip archive (truncated, corrupt or the "
                              f"legacy pre-1.6 format: {err})") from None
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise GDSSImportError(f"{path}: expected one <name>/data.pkl record in the archive, "
                                  f"found {len(pkls)}")
        prefix = pkls[0].split("/", 1)[0]
        order = f"{prefix}/byteorder"
        if order in archive.namelist() and archive.read(order).strip() not in (b"little", b""):
            raise GDSSImportError(f"{path}: big-endian archives are not supported")
        try:
            with archive.open(pkls[0]) as fh:
                obj = _GDSSUnpickler(fh, archive, prefix).load()
        except _RefusedGlobal as err:
            raise GDSSImportError(f"{path}: refusing to unpickle global {err}: a GDSS checkpoint "
                                  "may only hold tensors, plain containers and EasyDict") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                AttributeError, IndexError, KeyError, OSError, MemoryError) as err:
            raise GDSSImportError(f"{path}: unreadable pickle (truncated or corrupt: "
                                  f"{type(err).__name__}: {err})") from None
    if not isinstance(obj, Mapping):
        raise GDSSImportError(f"{path}: expected a dict, got {type(obj).__name__}")
    return _plain(obj)


# --- config -> GraphDiffusion hyper-parameters ----------------------------------------------------


def _get(tree: Mapping, dotted: str, path: Path, kinds: tuple[type, ...] | None = None) -> Any:
    """``tree[a][b]...`` for ``dotted = "a.b..."``; a missing key or wrong type is named."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise GDSSImportError(f"{path}: missing field {dotted}")
        node = node[part]
    if kinds is not None and (not isinstance(node, kinds) or isinstance(node, bool)
                              and bool not in kinds):
        raise GDSSImportError(f"{path}: field {dotted} must be "
                              f"{' or '.join(k.__name__ for k in kinds)}, got {node!r}")
    return node


def _sde(config: Mapping, key: str, path: Path) -> dict[str, Any]:
    kind = _get(config, f"sde.{key}.type", path, (str,))
    if kind not in ("VP", "VE", "subVP"):
        raise GDSSImportError(f"{path}: field sde.{key}.type must be VP, VE or subVP, got "
                              f"{kind!r}")
    return {"type": kind,
            "beta_min": float(_get(config, f"sde.{key}.beta_min", path, (int, float))),
            "beta_max": float(_get(config, f"sde.{key}.beta_max", path, (int, float)))}


def sampler_settings(config: Mapping, path: Path) -> tuple[str, int, dict[str, Any], bool]:
    """GDSS's ``config.sampler`` / ``config.sample`` as (sampler, NFE, options, use_ema).

    ``S4`` -> the plugin's ``s4`` (one evaluation per time point); ``Euler`` / ``Reverse`` ->
    ``gdss_pc`` (``1 + n_steps`` evaluations per time point with the Langevin corrector).
    """
    pred = _get(config, "sampler.predictor", path, (str,))
    corr = str(_get(config, "sampler.corrector", path))
    snr = float(_get(config, "sampler.snr", path, (int, float)))
    scale_eps = float(_get(config, "sampler.scale_eps", path, (int, float)))
    n_corr = int(_get(config, "sampler.n_steps", path, (int,)))
    eps = float(_get(config, "sample.eps", path, (int, float)))
    use_ema = bool(_get(config, "sample.use_ema", path, (bool,)))
    denoise = bool(_get(config, "sample.noise_removal", path, (bool,)))
    if _get(config, "sample.probability_flow", path, (bool,)):
        raise GDSSImportError(f"{path}: field sample.probability_flow=True is not supported")
    points = int(_get(config, "sde.adj.num_scales", path, (int,)))
    if pred == "S4":
        return "s4", points, {"snr": snr, "scale_eps": scale_eps, "eps": eps,
                              "denoise_final": denoise}, use_ema
    if pred not in ("Euler", "Reverse"):
        raise GDSSImportError(f"{path}: field sampler.predictor must be S4, Euler or Reverse, "
                              f"got {pred!r}")
    if corr not in ("Langevin", "None"):
        raise GDSSImportError(f"{path}: field sampler.corrector must be Langevin or None, got "
                              f"{corr!r}")
    nfe = points * (1 + n_corr) if corr == "Langevin" else points
    return "gdss_pc", nfe, {"predictor": pred.lower(), "corrector": corr.lower(), "snr": snr,
                            "scale_eps": scale_eps, "n_corrector": n_corr, "eps": eps,
                            "denoise_final": denoise}, use_ema


def hparams_from_gdss(ckpt: Mapping, path: str | Path,
                      sample_config: Mapping | None = None) -> dict[str, Any]:
    """GraphDiffusion hyper-parameters matching a GDSS checkpoint.

    Args:
        ckpt: the checkpoint as read by :func:`read_gdss_checkpoint`.
        path: its file (for messages).
        sample_config: a GDSS sampling config (``sampler`` / ``sample`` sections, e.g. GDSS's
            ``config/sample_qm9.yaml``) used where the checkpoint's own config has none.
    """
    path = Path(path)
    config = _get(ckpt, "model_config", path, (dict,))
    if sample_config is not None:
        config = {**config, **{k: sample_config[k] for k in ("sampler", "sample")
                               if k in sample_config}}
    for part in ("sampler", "sample"):
        if part not in config:
            raise GDSSImportError(f"{path}: the checkpoint's config has no '{part}' section; "
                                  "pass a GDSS sampling config (--sample-config, e.g. "
                                  "config/sample_qm9.yaml)")
    px = _get(ckpt, "params_x", path, (dict,))
    pa = _get(ckpt, "params_adj", path, (dict,))
    x_type = _get(px, "model_type", path, (str,))
    if x_type not in ("ScoreNetworkX", "ScoreNetworkX_GMH"):
        raise GDSSImportError(f"{path}: field params_x.model_type must be ScoreNetworkX or "
                              f"ScoreNetworkX_GMH, got {x_type!r}")
    if _get(pa, "model_type", path, (str,)) != "ScoreNetworkA":
        raise GDSSImportError(f"{path}: field params_adj.model_type must be ScoreNetworkA, got "
                              f"{pa['model_type']!r}")
    for key in ("max_feat_num", "nhid"):
        if _get(px, key, path) != _get(pa, key, path):
            raise GDSSImportError(f"{path}: params_x.{key}={px[key]} differs from "
                                  f"params_adj.{key}={pa[key]}; the plugin's network shares it")
    if x_type == "ScoreNetworkX_GMH":
        for key in ("num_linears", "c_init", "c_hid", "c_final", "adim", "num_heads", "conv"):
            if _get(px, key, path) != _get(pa, key, path):
                raise GDSSImportError(f"{path}: params_x.{key} differs from params_adj.{key}; "
                                      "the plugin's GMH network shares it")
    sampler, nfe, options, use_ema = sampler_settings(config, path)
    data_name = str(_get(config, "data.data", path, (str,)))
    train = _get(config, "train", path, (dict,))
    ints = {k: int(_get(pa, k, path, (int,))) for k in
            ("num_layers", "num_linears", "c_init", "c_hid", "c_final", "adim", "num_heads")}
    return {
        "max_nodes": int(_get(pa, "max_node_num", path, (int,))),
        "max_feat": int(_get(px, "max_feat_num", path, (int,))),
        "molecule": _MOLECULES.get(data_name),
        "sde_x": _sde(config, "x", path), "sde_adj": _sde(config, "adj", path),
        "x_net": "gmh" if x_type == "ScoreNetworkX_GMH" else "gcn",
        "depth": int(_get(px, "depth", path, (int,))), "nhid": int(_get(px, "nhid", path, (int,))),
        **ints, "conv": str(_get(pa, "conv", path, (str,))), "time_cond": False,
        "lr": float(train.get("lr", 0.01)), "weight_decay": float(train.get("weight_decay", 1e-4)),
        "ema_decay": float(train.get("ema", 0.999)),
        "lr_gamma": float(train["lr_decay"]) if train.get("lr_schedule") else None,
        "grad_norm": float(train.get("grad_norm", 1.0)), "t_min": float(train.get("eps", 1e-5)),
        "sampler": sampler, "sampling_steps": nfe, "sampler_options": options,
        "sample_ema": use_ema, "num_val_samples": 0,
        "seed": int(config["sample"].get("seed", 0)),
    }


# --- weights ----------------------------------------------------------------------------------------


def rename_key(key: str) -> str:
    """A GDSS parameter name in the plugin's naming (before the GCN ``lin.weight`` transposition)."""
    if key.startswith("module."):  # DataParallel
        key = key[len("module."):]
    key = key.replace(".linears.", ".layers.").replace(".linear.", ".layers.0.")
    for q in ("q", "k", "v"):
        key = key.replace(f".gnn_{q}.", f".{q}.")
    return key


def convert_state_dict(raw: Mapping[str, Tensor], target: Mapping[str, Tensor], prefix: str,
                       path: Path, what: str) -> dict[str, Tensor]:
    """GDSS weights renamed (and GCN weights transposed) to fit ``target`` keys under ``prefix``."""
    out: dict[str, Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, Tensor):
            raise GDSSImportError(f"{path}: {what}[{key!r}] is not a tensor")
        name = prefix + rename_key(key)
        gcn = name[: -len("weight")] + "lin.weight" if name.endswith(".weight") else None
        if name not in target and gcn is not None and gcn in target:
            name, value = gcn, value.t()
        if name in out:
            raise GDSSImportError(f"{path}: {what}: two weights map to {name}")
        out[name] = value.contiguous()
    return out


def _shadow_state(ema: Any, raw: Mapping[str, Tensor], path: Path, what: str
                  ) -> tuple[dict[str, Tensor], int]:
    """EMA shadows mapped by parameter order onto the raw state dict's names."""
    shadows = _get({"e": ema}, "e.shadow_params", path, (list, tuple))
    if len(shadows) != len(raw):
        raise GDSSImportError(f"{path}: {what}.shadow_params has {len(shadows)} tensors, the "
                              f"network has {len(raw)} parameters")
    out = {}
    for (key, value), shadow in zip(raw.items(), shadows, strict=True):
        if not isinstance(shadow, Tensor) or shadow.shape != value.shape:
            raise GDSSImportError(f"{path}: {what}.shadow_params does not match parameter {key} "
                                  f"(shape {tuple(value.shape)})")
        out[key] = shadow
    updates = ema.get("num_updates") if isinstance(ema, Mapping) else None
    return out, int(updates) if type(updates) is int else 0


def _load(module: torch.nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise GDSSImportError(f"{path}: {what} do not fit the plugin's network after the renames: "
                              f"{' '.join(s.strip() for s in first[:3])[:400]}") from None


def convert(ckpt: Mapping, path: str | Path, sample_config: Mapping | None = None):
    """The GraphDiffusion matching a GDSS checkpoint (read by :func:`read_gdss_checkpoint`).

    Raw weights go to ``model.network``, EMA shadows to ``model.ema_network``; ``sample_ema``
    follows the checkpoint's ``config.sample.use_ema``.
    """
    from domaindiff_graphs.model import GraphDiffusion

    path = Path(path)
    hp = hparams_from_gdss(ckpt, path, sample_config)
    try:
        model = GraphDiffusion(**hp)
    except (TypeError, ValueError) as err:
        raise GDSSImportError(f"{path}: config does not fit GraphDiffusion: {err}") from None
    target = model.network.state_dict()
    raws = {side: _get(ckpt, f"{side}_state_dict", path, (dict,)) for side in ("x", "adj")}
    state = {}
    for side, sub in (("x", "net_x."), ("adj", "net_adj.")):
        state.update(convert_state_dict(raws[side], target, sub, path, f"{side}_state_dict"))
    _load(model.network, state, path, "x_state_dict/adj_state_dict")
    has_ema = "ema_x" in ckpt and "ema_adj" in ckpt
    if hp["sample_ema"] and not has_ema:
        raise GDSSImportError(f"{path}: sample.use_ema is set but the checkpoint has no "
                              "ema_x/ema_adj")
    if model.ema_network is not None and not has_ema:  # QM9, ZINC250k: raw weights only
        model.ema_network.module.load_state_dict(model.network.state_dict())
    elif model.ema_network is not None:
        ema_state, updates = {}, 0
        for side, sub in (("x", "net_x."), ("adj", "net_adj.")):
            shadow, n = _shadow_state(_get(ckpt, f"ema_{side}", path), raws[side], path,
                                      f"ema_{side}")
            ema_state.update(convert_state_dict(shadow, target, sub, path, f"ema_{side}"))
            updates = max(updates, n)
        _load(model.ema_network.module, ema_state, path, "ema_x/ema_adj shadows")
        model.ema_network.n_averaged.fill_(updates)
    elif hp["sample_ema"]:
        raise GDSSImportError(f"{path}: sample.use_ema is set but train.ema is 0")
    model.eval()
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_plain(value: Any) -> Any:
    """Config values that ``torch.load(weights_only=True)`` reads back (others as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def checkpoint_dict(model, source: Path, config: Mapping) -> dict[str, Any]:
    """A Lightning-style checkpoint of ``model`` (what ``load_checkpoint`` reads)."""
    import lightning

    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hyper_parameters": dict(model.hparams),
        "domaindiff": {"class_path": CLASS_PATH, "train_batches": 0},
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
        "gdss_import": {"source": source.name, "sha256": _sha256(source),
                        "config": _json_plain(config)},
    }


def import_gdss(src: str | Path, dst: str | Path, sample_config: Mapping | None = None,
                node_counts: list[int] | None = None, train_graphs: list | None = None):
    """Read ``src`` (a GDSS ``.pth``), convert it and write ``dst`` atomically; returns the model.

    Args:
        src: GDSS checkpoint.
        dst: domaindiff checkpoint to write (``.ckpt``).
        sample_config: GDSS sampling config for checkpoints whose config has none (QM9).
        node_counts: training graphs' node counts (the sampling size distribution); GDSS's
            checkpoints do not carry them.
        train_graphs: the training graphs (networkx with one-hot degree features as GDSS's
            ``init: deg``, or PyG ``Data``): their node counts (unless ``node_counts`` is given)
            and the entry moments of the ``prior="moment_matched"`` start are stored in ``dst``.
    """
    from domaindiff.data import atomic_save

    src = Path(src)
    ckpt = read_gdss_checkpoint(src)
    model = convert(ckpt, src, sample_config)
    if train_graphs and not node_counts:
        node_counts = [int(g.number_of_nodes() if hasattr(g, "number_of_nodes")
                           else g.num_nodes) for g in train_graphs]
    if node_counts:
        try:
            model.set_node_counts(list(node_counts))
        except ValueError as err:
            raise GDSSImportError(f"{src}: node counts do not fit: {err}") from None
    if train_graphs:
        try:
            model.set_prior_moments(list(train_graphs))
        except ValueError as err:
            raise GDSSImportError(f"{src}: training graphs do not fit: {err}") from None
    config = ckpt["model_config"] if sample_config is None else {
        **ckpt["model_config"], **{k: v for k, v in sample_config.items()
                                   if k in ("sampler", "sample")}}
    atomic_save(checkpoint_dict(model, src, config), dst)
    return model


# --- verification -----------------------------------------------------------------------------------


def gcn_reference(x: Tensor, adj: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """GDSS's dense GCN computed by hand: ``D^-1/2 (A with unit diagonal) D^-1/2 X W + b``."""
    a = adj.clone()
    n = a.shape[-1]
    a[:, torch.arange(n), torch.arange(n)] = 1.0
    d = a.sum(-1).clamp(min=1).pow(-0.5)
    out = (d[..., None] * a * d[..., None, :]) @ (x @ weight)
    return out if bias is None else out + bias


# GDSS's forward pass re-derived from its formulas on the raw (unrenamed) weights: an independent
# check that the renamed weights in the plugin's networks compute the same function.


def _ref_mlp(sd: Mapping[str, Tensor], prefix: str, x: Tensor, act) -> Tensor:
    if f"{prefix}.linear.weight" in sd:
        return x @ sd[f"{prefix}.linear.weight"].t() + sd[f"{prefix}.linear.bias"]
    n = sum(1 for k in sd if k.startswith(f"{prefix}.linears.") and k.endswith(".weight"))
    for i in range(n):
        x = x @ sd[f"{prefix}.linears.{i}.weight"].t() + sd[f"{prefix}.linears.{i}.bias"]
        x = act(x) if i < n - 1 else x
    return x


def _ref_gcn(sd: Mapping[str, Tensor], prefix: str, x: Tensor, adj: Tensor) -> Tensor:
    return gcn_reference(x, adj, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))


def _ref_mask_adj(adj: Tensor, flags: Tensor) -> Tensor:
    m = flags[:, :, None] * flags[:, None, :]
    return adj * (m[:, None] if adj.dim() == 4 else m)


def _ref_attention_layer(sd, prefix, x, adjc, flags, attn_dim, num_heads, conv):
    elu = torch.nn.functional.elu
    values, atts = [], []
    for c in range(adjc.shape[1]):
        pre, a = f"{prefix}.attn.{c}", adjc[:, c]
        if conv == "GCN":
            q, k = _ref_gcn(sd, f"{pre}.gnn_q", x, a), _ref_gcn(sd, f"{pre}.gnn_k", x, a)
        else:
            q, k = _ref_mlp(sd, f"{pre}.gnn_q", x, torch.tanh), _ref_mlp(sd, f"{pre}.gnn_k", x,
                                                                         torch.tanh)
        v = _ref_gcn(sd, f"{pre}.gnn_v", x, a)
        split = attn_dim // num_heads
        q_, k_ = torch.cat(q.split(split, 2), 0), torch.cat(k.split(split, 2), 0)
        att = torch.tanh(q_.bmm(k_.transpose(1, 2)) / math.sqrt(v.shape[-1]))
        att = att.view(-1, *a.shape).mean(0)
        values.append(v)
        atts.append(((att + att.transpose(-1, -2)) / 2)[..., None])
    x_out = torch.tanh(_ref_mlp(sd, f"{prefix}.multi_channel", torch.cat(values, -1), elu)
                       * flags[..., None])
    mlp_in = torch.cat([torch.cat(atts, -1), adjc.permute(0, 2, 3, 1)], -1)
    out = _ref_mlp(sd, f"{prefix}.mlp", mlp_in, elu).permute(0, 3, 1, 2)
    return x_out, _ref_mask_adj(out + out.transpose(-1, -2), flags)


def _ref_powers(adj: Tensor, c: int) -> Tensor:
    out, cur = [adj], adj
    for _ in range(c - 1):
        cur = torch.bmm(cur, adj)
        out.append(cur)
    return torch.stack(out, 1)


def reference_outputs(ckpt: Mapping, x: Tensor, adj: Tensor, flags: Tensor,
                      weights: str = "raw") -> dict[str, Tensor]:
    """GDSS's ScoreNetworkX(/_GMH) and ScoreNetworkA outputs, computed from the raw GDSS weights.

    Args:
        ckpt: a checkpoint read by :func:`read_gdss_checkpoint`.
        x: node features (B, N, F).
        adj: adjacency (B, N, N).
        flags: node flags (B, N).
        weights: "raw" (the state dicts) or "ema" (the shadows, in parameter order).
    """
    elu = torch.nn.functional.elu
    px, pa = ckpt["params_x"], ckpt["params_adj"]
    sds = {}
    for side in ("x", "adj"):
        sd = ckpt[f"{side}_state_dict"]
        if weights == "ema":
            sd = dict(zip(sd, ckpt[f"ema_{side}"]["shadow_params"], strict=True))
        sds[side] = {k[len("module."):] if k.startswith("module.") else k: v
                     for k, v in sd.items()}
    sx, sa = sds["x"], sds["adj"]
    hs, h = [x], x
    if px["model_type"] == "ScoreNetworkX":
        for i in range(px["depth"]):
            h = torch.tanh(_ref_gcn(sx, f"layers.{i}", h, adj))
            hs.append(h)
    else:
        adjc = _ref_powers(adj, px["c_init"])
        for i in range(px["depth"]):
            h, adjc = _ref_attention_layer(sx, f"layers.{i}", h, adjc, flags,
                                           px["nhid"] if i == 0 else px["adim"],
                                           px["num_heads"], px["conv"])
            h = torch.tanh(h)
            hs.append(h)
    out_x = _ref_mlp(sx, "final", torch.cat(hs, -1), elu) * flags[..., None]
    adjc = _ref_powers(adj, pa["c_init"])
    chans, h = [adjc], x
    for i in range(pa["num_layers"]):
        h, adjc = _ref_attention_layer(sa, f"layers.{i}", h, adjc, flags,
                                       pa["nhid"] if i == 0 else pa["adim"], pa["num_heads"],
                                       pa["conv"])
        chans.append(adjc)
    score = _ref_mlp(sa, "final", torch.cat(chans, 1).permute(0, 2, 3, 1), elu).squeeze(-1)
    n = adj.shape[-1]
    score = score * (1 - torch.eye(n, dtype=score.dtype))
    return {"x": out_x, "adj": _ref_mask_adj(score, flags)}


def random_inputs(model, batch: int = 3, seed: int = 0) -> dict[str, Tensor]:
    """Random (not sampled) node features, symmetric adjacencies and node masks for checks."""
    gen = torch.Generator().manual_seed(seed)
    n, f = model.max_nodes, model.max_feat
    sizes = torch.randint(max(1, n // 2), n + 1, (batch,), generator=gen)
    mask = (torch.arange(n)[None] < sizes[:, None]).float()
    x = torch.randn(batch, n, f, generator=gen) * mask[..., None]
    a = torch.randn(batch, n, n, generator=gen).triu(1)
    adj = (a + a.transpose(-1, -2)) * mask[:, :, None] * mask[:, None, :]
    return {"x": x, "adj": adj, "mask": mask}


__all__ = ["RELEASED_CHECKPOINTS", "GDSSImportError", "checkpoint_dict", "convert",
           "convert_state_dict", "gcn_reference",
           "hparams_from_gdss", "import_gdss", "random_inputs", "read_gdss_checkpoint",
           "reference_outputs",
           "rename_key", "sampler_settings"]
