"""Shared fixtures: a private data dir for every test."""

import pytest
import torch

# one thread: the test machine is shared, and oversubscribed threads are ~10x slower
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "data"))
