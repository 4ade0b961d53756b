"""domaindiff plugin: timeseries."""

__version__ = "0.1.0"

DATAMODULES: list[type] = []
MODELS: list[type] = []
