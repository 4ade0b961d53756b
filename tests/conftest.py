"""Shared test settings: small thread counts and an isolated data cache."""

import os

import pytest
import torch

# One thread: on a shared 2-core machine two threads waiting on each other made small-tensor
# tests up to 12x slower; DOMAINDIFF_THREADS overrides.
torch.set_num_threads(int(os.environ.get("DOMAINDIFF_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own DOMAINDIFF_DATA so no test touches the real cache."""
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "data_cache"))
