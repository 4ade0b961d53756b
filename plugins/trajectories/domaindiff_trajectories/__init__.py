"""domaindiff plugin: trajectories.

GeoTDM, SE(3)-equivariant diffusion of 3-D geometric trajectories (Han et al., ICLR 2024), on the
domaindiff core.
"""

from domaindiff_trajectories.data import ETHUCY, MD17, NBody
from domaindiff_trajectories.model import GeoTDM
from domaindiff_trajectories.networks import EGTN, GeoTDMNetwork

__version__ = "0.1.0"

DATAMODULES: list[type] = [NBody, MD17, ETHUCY]
MODELS: list[type] = [GeoTDM]

__all__ = ["DATAMODULES", "EGTN", "ETHUCY", "MD17", "MODELS", "GeoTDM", "GeoTDMNetwork", "NBody",
           "__version__"]
