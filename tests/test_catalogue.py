"""The bad-input catalogue spans the core and all four plugins, with at least 40 entries."""

import importlib

import pytest

AREAS = ["core", "graphs", "timeseries", "trajectories", "medical"]
# further catalogues of an area
EXTRA = {"graphs": ["tests.graphs.test_user_data", "tests.graphs.test_gdss_import"],
         "core": ["tests.core.test_distill_cli", "tests.core.test_grids"],
         "timeseries": ["tests.timeseries.test_competitions"]}


def _catalogue(area):
    cases = []
    for name in [f"tests.{area}.test_bad_inputs", *EXTRA.get(area, [])]:
        try:
            cases += importlib.import_module(name).CATALOGUE
        except ModuleNotFoundError as err:  # a plugin's test dependencies are missing
            pytest.fail(f"{name} cannot be imported: {err}")
    return cases


def test_catalogue_has_at_least_40_unique_entries_across_all_areas():
    entries = {area: _catalogue(area) for area in AREAS}
    ids = [c.id for cases in entries.values() for c in cases]
    assert len(ids) == len(set(ids)), "catalogue ids must be unique"
    assert len(ids) >= 40, {a: len(c) for a, c in entries.items()}
    assert all(len(c) >= 5 for c in entries.values()), {a: len(c) for a, c in entries.items()}
