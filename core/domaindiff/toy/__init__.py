"""The toy plugin: Gaussian mixtures whose scores, marginals and likelihoods are exact.

Registered under the ``domaindiff.plugins`` entry point like any other plugin; used by the demo,
the tests and the sampler benchmark.
"""

from domaindiff import __version__
from domaindiff.toy.data import GaussianMixtureData, make_mixture
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture, SubspaceGaussian
from domaindiff.toy.model import ToyDiffusion

DATAMODULES = [GaussianMixtureData]
MODELS = [ToyDiffusion]

__all__ = [
    "DATAMODULES",
    "MODELS",
    "ExactDenoiser",
    "GaussianMixture",
    "GaussianMixtureData",
    "SubspaceGaussian",
    "ToyDiffusion",
    "__version__",
    "make_mixture",
]
