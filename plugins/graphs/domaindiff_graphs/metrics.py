"""GDSS's graph and molecule metrics.

Generic graphs (GraphRNN/GDSS evaluation): MMD between generated and test graphs of
- degree histograms (normalised), Gaussian-EMD kernel, sigma 1;
- clustering-coefficient histograms (100 bins on [0, 1], normalised), Gaussian-EMD kernel with
  sigma 0.1 and distances divided by the number of bins;
- per-graph mean 4-node orbit counts (ORCA's 15 orbits, see :mod:`orbits`), Gaussian (L2) kernel,
  sigma 30, not normalised.
``MMD^2 = mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)`` with all pairs (self pairs included), as
the reference computes it. The EMD between 1-D histograms of equal mass on the support 0..n-1 with
ground distance ``|i - j| / scaling`` is the L1 distance of their CDFs over ``scaling`` (exact; the
tests check it against ``pyemd``).

Molecules: validity without correction (valid before correction / all generated), validity,
uniqueness (unique valid / valid), novelty (valid not in train / valid), NSPDK MMD (EDeN
``vectorize(complexity=4, discrete=True)``, linear kernel) and FCD (through ``fcd_torch`` when
installed).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from domaindiff_graphs.orbits import orbit_counts

# --- kernels and MMD -------------------------------------------------------------------------


def _pad(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(x), len(y))
    return (np.pad(np.asarray(x, float), (0, n - len(x))),
            np.pad(np.asarray(y, float), (0, n - len(y))))


def emd_1d(x: np.ndarray, y: np.ndarray, distance_scaling: float = 1.0) -> float:
    """EMD between two 1-D histograms of equal mass, ground distance ``|i - j| / scaling``."""
    x, y = _pad(x, y)
    return float(np.abs(np.cumsum(x - y)).sum() / distance_scaling)


def gaussian_emd(x: np.ndarray, y: np.ndarray, sigma: float = 1.0,
                 distance_scaling: float = 1.0) -> float:
    """``exp(-EMD(x, y)^2 / (2 sigma^2))`` (GraphRNN's ``gaussian_emd``)."""
    d = emd_1d(x, y, distance_scaling)
    return float(np.exp(-d * d / (2 * sigma * sigma)))


def gaussian(x: np.ndarray, y: np.ndarray, sigma: float = 1.0) -> float:
    """``exp(-|x - y|^2 / (2 sigma^2))`` with zero-padding to a common length."""
    x, y = _pad(x, y)
    d2 = float(((x - y) ** 2).sum())
    return float(np.exp(-d2 / (2 * sigma * sigma)))


def compute_mmd(samples1: Sequence[np.ndarray], samples2: Sequence[np.ndarray], kernel,
                is_hist: bool = True, **kwargs) -> float:
    """Squared MMD with all pairs (self pairs included), histograms normalised if ``is_hist``."""
    if not samples1 or not samples2:
        raise ValueError("compute_mmd: both sample lists must be non-empty")
    if is_hist:
        samples1 = [np.asarray(s, float) / max(np.sum(s), 1e-12) for s in samples1]
        samples2 = [np.asarray(s, float) / max(np.sum(s), 1e-12) for s in samples2]

    def disc(a, b):
        return float(np.mean([kernel(s, t, **kwargs) for s in a for t in b]))

    return disc(samples1, samples1) + disc(samples2, samples2) - 2 * disc(samples1, samples2)


# --- graph statistics ------------------------------------------------------------------------


def degree_hist(g: nx.Graph) -> np.ndarray:
    """``nx.degree_histogram`` as an array."""
    return np.asarray(nx.degree_histogram(g), dtype=float)


def clustering_hist(g: nx.Graph, bins: int = 100) -> np.ndarray:
    """Histogram of the clustering coefficients on ``[0, 1]`` with ``bins`` bins."""
    coeffs = list(nx.clustering(g).values())
    hist, _ = np.histogram(coeffs, bins=bins, range=(0.0, 1.0), density=False)
    return hist.astype(float)


def orbit_vector(g: nx.Graph) -> np.ndarray:
    """Sum of the 15 orbit counts over nodes divided by the number of nodes."""
    return orbit_counts(g).sum(axis=0) / max(g.number_of_nodes(), 1)


def _nonempty(graphs: Sequence[nx.Graph]) -> list[nx.Graph]:
    return [g for g in graphs if g.number_of_nodes() > 0]


def degree_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> float:
    """Degree MMD (Gaussian EMD, sigma 1)."""
    return compute_mmd([degree_hist(g) for g in ref], [degree_hist(g) for g in _nonempty(pred)],
                       gaussian_emd, sigma=1.0)


def clustering_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph], bins: int = 100) -> float:
    """Clustering MMD (Gaussian EMD, sigma 0.1, distance scaled by ``bins``)."""
    return compute_mmd([clustering_hist(g, bins) for g in ref],
                       [clustering_hist(g, bins) for g in _nonempty(pred)], gaussian_emd,
                       sigma=0.1, distance_scaling=bins)


def orbit_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> float:
    """Orbit MMD (Gaussian L2 kernel, sigma 30, on mean orbit counts)."""
    return compute_mmd([orbit_vector(g) for g in ref], [orbit_vector(g) for g in _nonempty(pred)],
                       gaussian, is_hist=False, sigma=30.0)


def graph_metrics(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph],
                  orbit: bool = True) -> dict[str, float]:
    """Degree, clustering (and orbit) MMD, plus their average as GDSS reports."""
    out = {"degree_mmd": degree_mmd(ref, pred), "clustering_mmd": clustering_mmd(ref, pred)}
    if orbit:
        out["orbit_mmd"] = orbit_mmd(ref, pred)
    out["avg_mmd"] = float(np.mean(list(out.values())))
    return out


# --- molecules -------------------------------------------------------------------------------


def nspdk_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> float:
    """NSPDK MMD with EDeN's ``vectorize(complexity=4, discrete=True)`` and a linear kernel.

    Graphs need ``label`` attributes on nodes (atom symbol) and edges (bond order).
    """
    from eden.graph import vectorize

    pred = _nonempty(pred)
    if not ref or not pred:
        raise ValueError("nspdk_mmd: both graph lists must be non-empty")
    x, y = vectorize(list(ref), complexity=4, discrete=True), \
        vectorize(list(pred), complexity=4, discrete=True)
    kxx, kyy, kxy = (x @ x.T).toarray(), (y @ y.T).toarray(), (x @ y.T).toarray()
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


def canonical(mols: Sequence) -> list[str]:
    """Canonical SMILES of the valid molecules (None and unparseable ones skipped)."""
    from rdkit import Chem

    out = []
    for m in mols:
        if m is None:
            continue
        smi = Chem.MolToSmiles(m)
        if smi and Chem.MolFromSmiles(smi) is not None:
            out.append(smi)
    return out


def fcd_available() -> bool:
    """Whether ``fcd_torch`` (ChemNet weights in the wheel) can be imported."""
    try:
        import fcd_torch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means unavailable
        return False
    return True


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: ``|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

    ``tr sqrt(S1 S2)`` is computed from symmetric eigendecompositions (``S1^1/2 S2 S1^1/2`` is
    symmetric positive semi-definite), which equals ``fcd_torch``'s ``scipy.linalg.sqrtm(S1 S2)``
    trace but takes milliseconds instead of seconds for ChemNet's 512 x 512 covariances.
    """
    # torch's eigh in float64 (it honours torch's thread setting; numpy's OpenBLAS threads can
    # take seconds per call on a loaded machine)
    mu1, mu2 = (torch.as_tensor(np.asarray(m), dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.asarray(s), dtype=torch.float64) for s in (sigma1, sigma2))
    w, v = torch.linalg.eigh(0.5 * (s1 + s1.T))
    root1 = (v * w.clamp_min(0.0).sqrt()) @ v.T
    inner = root1 @ (0.5 * (s2 + s2.T)) @ root1
    tr_covmean = torch.linalg.eigvalsh(0.5 * (inner + inner.T)).clamp_min(0.0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean)


def fcd(ref_smiles: Sequence[str], gen_smiles: Sequence[str]) -> float:
    """Frechet ChemNet Distance (``fcd_torch``'s ChemNet, GDSS's choice).

    ChemNet activations come from ``fcd_torch`` (the ``fcd`` package gives other values), the
    Frechet distance from :func:`frechet_distance`. NaN when either set has fewer than two
    molecules (no covariance).
    """
    from fcd_torch import FCD

    if len(ref_smiles) < 2 or len(gen_smiles) < 2:
        return float("nan")
    net = FCD(device="cpu", n_jobs=1)
    stats = []
    for smi in (ref_smiles, gen_smiles):
        act = net.get_predictions(list(smi))
        stats.append((act.mean(0), np.cov(act.T)))
    return frechet_distance(*stats[0], *stats[1])


def molecule_metrics(mols: Sequence, valid_wo_correction: Sequence[bool],
                     train_smiles: Sequence[str], test_graphs: Sequence[nx.Graph] | None = None,
                     test_smiles: Sequence[str] | None = None) -> dict[str, float]:
    """GDSS's molecule table.

    Args:
        mols: decoded (corrected) molecules, None where invalid.
        valid_wo_correction: per generated sample, valid before any correction.
        train_smiles: canonical training SMILES (novelty).
        test_graphs: labelled test graphs for NSPDK (optional).
        test_smiles: test SMILES for FCD (optional; skipped when ``fcd_torch`` is missing).
    """
    from domaindiff_graphs.data import mol_to_nx

    n = len(valid_wo_correction)
    if n == 0:
        raise ValueError("molecule_metrics: no generated samples")
    smiles = canonical(mols)
    train = set(train_smiles)
    out = {
        "validity_wo_correction": sum(bool(v) for v in valid_wo_correction) / n,
        "validity": len(smiles) / n,
        "uniqueness": len(set(smiles)) / len(smiles) if smiles else 0.0,
        "novelty": sum(s not in train for s in smiles) / len(smiles) if smiles else 0.0,
    }
    valid = [m for m in mols if m is not None]
    if test_graphs is not None and valid:
        out["nspdk_mmd"] = nspdk_mmd(test_graphs, [mol_to_nx(m) for m in valid])
    if test_smiles is not None and smiles and fcd_available():
        out["fcd"] = fcd(test_smiles, smiles)
    return out


# --- torchmetrics (validation, DDP-synced) -----------------------------------------------------


class _HistMMD(Metric):
    """Accumulates per-graph histograms of generated and reference graphs; computes their MMD."""

    full_state_update = False
    size = 64

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("gen", default=[], dist_reduce_fx="cat")
        self.add_state("ref", default=[], dist_reduce_fx="cat")

    def hist(self, g: nx.Graph) -> np.ndarray:
        raise NotImplementedError

    def _stack(self, graphs: Sequence[nx.Graph]) -> Tensor:
        rows = np.zeros((len(graphs), self.size))
        for i, g in enumerate(graphs):
            h = self.hist(g)[: self.size]
            rows[i, : len(h)] = h
        return torch.as_tensor(rows, dtype=torch.float64, device=self.device)

    def update(self, gen: Sequence[nx.Graph], ref: Sequence[nx.Graph]) -> None:
        """Add generated and reference graphs."""
        self.gen.append(self._stack(_nonempty(gen)))
        self.ref.append(self._stack(ref))

    def _cat(self, x) -> np.ndarray:
        return (torch.cat(x) if isinstance(x, list) else x).cpu().numpy()


class DegreeMMD(_HistMMD):
    """Degree MMD as a torchmetrics Metric (histograms up to 64 degrees)."""

    def hist(self, g: nx.Graph) -> np.ndarray:
        return degree_hist(g)

    def compute(self) -> Tensor:
        return torch.tensor(compute_mmd(list(self._cat(self.ref)), list(self._cat(self.gen)),
                                        gaussian_emd, sigma=1.0))


class ClusteringMMD(_HistMMD):
    """Clustering MMD as a torchmetrics Metric."""

    size = 100

    def hist(self, g: nx.Graph) -> np.ndarray:
        return clustering_hist(g, 100)

    def compute(self) -> Tensor:
        return torch.tensor(compute_mmd(list(self._cat(self.ref)), list(self._cat(self.gen)),
                                        gaussian_emd, sigma=0.1, distance_scaling=100))


class MoleculeValidity(Metric):
    """Fraction of sampled molecules valid without correction (DDP-synced counts)."""

    full_state_update = False

    def __init__(self, atom_types: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.atom_types = tuple(atom_types)
        self.add_state("valid", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, samples: dict[str, Tensor]) -> None:
        """Decode a batch of dense samples and count the valid ones."""
        from domaindiff_graphs.mol import decode_molecules

        _, ok = decode_molecules(samples["x"], samples["adj"], samples.get("mask"),
                                 self.atom_types, correct=False)
        self.valid += float(sum(ok))
        self.total += float(len(ok))

    def compute(self) -> Tensor:
        return self.valid / self.total.clamp_min(1.0)
