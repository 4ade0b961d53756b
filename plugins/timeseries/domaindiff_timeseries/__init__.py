"""domaindiff plugin: timeseries.

TSDiff, self-guiding diffusion models for probabilistic time-series forecasting, refinement and
synthesis (Kollovieh et al., NeurIPS 2023), on the domaindiff core.
"""

from domaindiff_timeseries.competitions import CompetitionData
from domaindiff_timeseries.data import DATASETS, TimeSeriesData, load_taylor_hourly
from domaindiff_timeseries.model import TSDiff, TSDiffCond
from domaindiff_timeseries.networks import S4DLayer, TSDiffBackbone

__version__ = "0.1.0"

DATAMODULES: list[type] = [TimeSeriesData, CompetitionData]
MODELS: list[type] = [TSDiff, TSDiffCond]

__all__ = ["DATAMODULES", "DATASETS", "CompetitionData", "MODELS", "S4DLayer", "TSDiff",
           "TSDiffBackbone", "TSDiffCond", "TSDiffPredictor", "TimeSeriesData", "__version__",
           "load_taylor_hourly"]


def __getattr__(name: str):
    """``TSDiffPredictor`` is imported on first use (it imports GluonTS's model stack)."""
    if name == "TSDiffPredictor":
        from domaindiff_timeseries.predictor import TSDiffPredictor

        return TSDiffPredictor
    raise AttributeError(f"module 'domaindiff_timeseries' has no attribute {name!r}")
