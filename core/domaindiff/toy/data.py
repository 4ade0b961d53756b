"""Gaussian-mixture datasets with exact densities: the toy plugin's DataModule."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from domaindiff.data import DomainDataModule
from domaindiff.toy.mixtures import GaussianMixture

MIXTURES = ("ring8", "grid9", "gaussian", "random")


def make_mixture(name: str = "ring8", dim: int = 2, seed: int = 0) -> GaussianMixture:
    """A named mixture.

    Args:
        name: ``ring8`` (8 Gaussians on a circle of radius 2, std 0.2, 2-D), ``grid9`` (3x3 grid,
            std 0.15, 2-D), ``gaussian`` (one correlated Gaussian in ``dim`` dimensions), ``random``
            (4 random components in ``dim`` dimensions, seeded).
        dim: dimension for ``gaussian`` and ``random``.
        seed: seed for ``random`` and ``gaussian``.
    """
    if name == "ring8":
        ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
        return GaussianMixture(2 * torch.stack([ang.cos(), ang.sin()], 1), 0.2**2)
    if name == "grid9":
        g = torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64)
        return GaussianMixture(torch.cartesian_prod(g, g), 0.15**2)
    gen = torch.Generator().manual_seed(seed)
    if name == "gaussian":
        a = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
        cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
        return GaussianMixture(torch.randn(1, dim, generator=gen, dtype=torch.float64), cov[None])
    if name == "random":
        means = 2 * torch.randn(4, dim, generator=gen, dtype=torch.float64)
        return GaussianMixture(means, 0.1 + 0.4 * torch.rand(4, generator=gen, dtype=torch.float64))
    raise ValueError(f"mixture: unknown {name!r}; choose one of {MIXTURES}")


class GaussianMixtureData(DomainDataModule):
    """Samples of a Gaussian mixture (exact, regenerated from the seed: nothing to download).

    Args:
        mixture: mixture name (see :func:`make_mixture`).
        dim: dimension (for ``gaussian`` / ``random``; 2 for the 2-D ones).
        num_train: training samples.
        num_val: validation samples.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: sampling seed.
        root: unused (no files).
    """

    name = "toy"

    def __init__(self, mixture: str = "ring8", dim: int = 2, num_train: int = 8192,
                 num_val: int = 1024, batch_size: int = 256, num_workers: int = 0, seed: int = 0,
                 root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if num_train < 1 or num_val < 1:
            raise ValueError("num_train and num_val must be >= 1")
        self.mixture_name, self.num_train, self.num_val = mixture, num_train, num_val
        self.mixture = make_mixture(mixture, dim, seed)
        self.dim = self.mixture.dim

    def setup(self, stage: str | None = None) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        self.train_set = TensorDataset(self.mixture.sample(self.num_train, gen))
        self.val_set = TensorDataset(self.mixture.sample(self.num_val, gen))

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.num_val, num_workers=self.num_workers)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
