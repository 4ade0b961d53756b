"""Shared fixtures: a private data cache for every test."""

import pytest


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "data"))
