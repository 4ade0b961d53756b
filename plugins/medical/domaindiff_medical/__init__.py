"""domaindiff plugin: medical (Echo-DND dual-noise diffusion for LV segmentation)."""

from .data import CAMUS, EchoNetDynamic, SyntheticEcho
from .model import EchoDND

__version__ = "0.1.0"

DATAMODULES: list[type] = [SyntheticEcho, CAMUS, EchoNetDynamic]
MODELS: list[type] = [EchoDND]

__all__ = ["CAMUS", "DATAMODULES", "EchoDND", "EchoNetDynamic", "MODELS", "SyntheticEcho",
           "__version__"]
