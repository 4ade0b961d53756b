"""Shared test settings: small thread counts and an isolated data cache."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own DOMAINDIFF_DATA so no test touches the real cache."""
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "data_cache"))
