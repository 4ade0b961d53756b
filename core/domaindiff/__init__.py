"""domaindiff: a small, exact, tested diffusion core for data that is not a picture."""

__version__ = "0.1.0"
