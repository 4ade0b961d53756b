"""Graph plugin subcommands: import-gdss (convert a GDSS released checkpoint to a domaindiff one).

``domaindiff graphs import-gdss IN.pth OUT.ckpt [--sample-config YAML] [--graphs PKL]``
(also ``python -m domaindiff_graphs.commands import-gdss ...``). Errors are one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domaindiff graphs",
                                     description="Graph plugin subcommands.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import-gdss", help="convert a GDSS .pth checkpoint into a domaindiff .ckpt",
        description="Read a GDSS released checkpoint with an allow-list unpickler (no code runs), "
                    "build the matching GraphDiffusion with the checkpoint's sampler settings as "
                    "its defaults, and write a domaindiff checkpoint atomically.")
    imp.add_argument("src", metavar="IN", help="GDSS checkpoint (.pth)")
    imp.add_argument("dst", metavar="OUT", help="domaindiff checkpoint to write (.ckpt)")
    imp.add_argument("--sample-config", metavar="YAML",
                     help="GDSS sampling config (sampler/sample sections) for checkpoints whose "
                          "config has none, e.g. GDSS's config/sample_qm9.yaml")
    imp.add_argument("--graphs", metavar="PKL",
                     help="GDSS graph list (data/<name>.pkl): the training part of its split "
                          "gives the node counts sampling draws from and the moments of the "
                          "moment-matched prior (sample with prior=moment_matched)")
    return parser


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--sample-config {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"--sample-config {p}: not valid YAML ({str(err).splitlines()[0]})") \
            from None
    if not isinstance(data, dict) or not ({"sampler", "sample"} & set(data)):
        raise ValueError(f"--sample-config {p}: expected a mapping with 'sampler' and 'sample' "
                         "sections")
    return data


def train_split_graphs(path: str | Path, max_nodes: int, test_split: float) -> list:
    """The training part of GDSS's split of a graph list (test = the first ``test_split``)."""
    from domaindiff_graphs.graphs import read_graph_pickle

    graphs = read_graph_pickle(path, max_nodes)
    test_size = int(test_split * len(graphs))
    train = graphs[test_size:]
    if not train:
        raise ValueError(f"--graphs {path}: no training graphs after the {test_split} test split")
    return train


def train_node_counts(path: str | Path, max_nodes: int, test_split: float) -> list[int]:
    """Node counts of the training part of GDSS's split of a graph list (test = first share)."""
    return [g.number_of_nodes() for g in train_split_graphs(path, max_nodes, test_split)]


def _import_gdss(args: argparse.Namespace) -> int:
    from domaindiff.module import load_checkpoint
    from domaindiff_graphs.gdss_import import (
        convert,
        random_inputs,
        read_gdss_checkpoint,
    )
    from domaindiff_graphs.gdss_import import import_gdss as run_import

    sample_config = _read_yaml(args.sample_config) if args.sample_config else None
    train = None
    if args.graphs:
        ckpt = read_gdss_checkpoint(args.src)
        model = convert(ckpt, args.src, sample_config)
        split = ckpt["model_config"].get("data", {}).get("test_split", 0.2)
        train = train_split_graphs(args.graphs, model.max_nodes, float(split))
    model = run_import(args.src, args.dst, sample_config, train_graphs=train)
    back = load_checkpoint(args.dst)
    inputs = random_inputs(model)
    t = torch.full((inputs["x"].shape[0],), 0.5)
    with torch.no_grad():
        for a, b in ((model.network, back.network),
                     (model.ema_network.module, back.ema_network.module)):
            out_a, out_b = a(inputs, t), b(inputs, t)
            if not all(torch.equal(out_a[k], out_b[k]) for k in out_a):
                raise RuntimeError(f"{args.dst}: reloaded network differs from the converted one")
    hp = model.hparams
    print(f"wrote {args.dst}: GraphDiffusion max_nodes={hp['max_nodes']} "
          f"max_feat={hp['max_feat']} sde_x={hp['sde_x']['type']} "
          f"sde_adj={hp['sde_adj']['type']}; sampler {hp['sampler']} "
          f"{hp['sampling_steps']} NFE {hp['sampler_options']}, "
          f"{'EMA' if hp['sample_ema'] else 'raw'} weights"
          + (f"; node counts and prior moments (prior='moment_matched') from {len(train)} "
             "training graphs" if train else
             "; no node counts or prior moments (pass --graphs, or call set_node_counts and "
             "set_prior_moments)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``domaindiff graphs <subcommand>``; returns the exit status."""
    from domaindiff.checkpoint import CheckpointError
    from domaindiff_graphs.gdss_import import GDSSImportError

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "import-gdss":
            return _import_gdss(args)
    except (GDSSImportError, CheckpointError, ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
