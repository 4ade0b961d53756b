"""TSDiff through the CLI, checkpoints, self-guidance, scenarios, refinement, the eval app."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from domaindiff.guidance import EnergyGuidance
from domaindiff.module import load_checkpoint
from domaindiff_timeseries.data import write_jsonl
from domaindiff_timeseries.forecast import (
    DDPMSelfGuidance,
    PredictionSelfGuidance,
    forecast,
    guidance_energy,
    quantile_levels,
    refine,
    scenario_mask,
)
from domaindiff_timeseries.model import TSDiff


class _GaussianEps(torch.nn.Module):
    """Exact eps-predictor for N(0, I) data under a VP process: eps_hat = sigma_t x_t."""

    def __init__(self, proc):
        super().__init__()
        self.proc = proc

    def forward(self, state, t):
        return {"x": self.proc.sigma(t)[:, None, None] * state["x"]}


def _analytic_model():
    model = TSDiff(dim=1, context_length=16, prediction_length=4, lags=[], hidden=8,
                   num_blocks=1, emb_dim=8, d_state=4)
    model.network = _GaussianEps(model.processes["x"])
    model.ema_network = None
    return model


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_self_guidance_pulls_context_to_observation(sampler):
    model = _analytic_model()
    n, length = 64, 20
    y = torch.full((n, length, 1), 1.5)
    m = torch.zeros(n, length, 1)
    m[:, :16] = 1
    tmpl = {"x": torch.zeros(n, length, 1), "past": torch.zeros(n, 0, 1)}
    gen = torch.Generator().manual_seed(0)
    free = model.sample(template=tmpl, sampler=sampler, steps=20, generator=gen)["x"]
    energy = guidance_energy(y, m, "mse")
    guide = (DDPMSelfGuidance(model.denoiser(), model.processes["x"], energy, 2.0)
             if sampler == "ancestral" else EnergyGuidance(energy, 2.0))
    gen = torch.Generator().manual_seed(0)
    guided = model.sample(template=tmpl, sampler=sampler, steps=20, generator=gen,
                          guidance=guide)["x"]
    err_free = (free[:, :16] - 1.5).abs().mean()
    err_guided = (guided[:, :16] - 1.5).abs().mean()
    assert err_guided < 0.5 * err_free
    # the horizon is independent of the context under N(0, I): it stays standard normal
    assert abs(float(guided[:, 16:].std()) - 1.0) < 0.25


class _ZeroEps(torch.nn.Module):
    """An untrained (zero-initialised head) denoiser: eps_hat = 0, so d x0_hat / d x_t = I / alpha."""

    def forward(self, state, t):
        return {"x": torch.zeros_like(state["x"])}


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_mse_guidance_is_stable_where_the_paper_step_overshoots(sampler):
    model = _analytic_model()
    model.network = _ZeroEps()
    n, length = 8, 20
    y = torch.full((n, length, 1), 1.5)
    m = torch.zeros(n, length, 1)
    m[:, :16] = 1
    tmpl = {"x": torch.zeros(n, length, 1), "past": torch.zeros(n, 0, 1)}

    def run(safe):
        energy = guidance_energy(y, m, "mse")
        guide = (DDPMSelfGuidance(model.denoiser(), model.processes["x"], energy, 4.0, safe=safe)
                 if sampler == "ancestral" else PredictionSelfGuidance(energy, 4.0, safe=safe))
        gen = torch.Generator().manual_seed(0)
        return model.sample(template=tmpl, sampler=sampler, steps=20, generator=gen,
                            guidance=guide)["x"]

    with torch.no_grad():
        paper = run(False)
        safe = run(True)
    # the paper's step (rate s var_t with |J| = 1/alpha) multiplies the residual every step
    assert not torch.isfinite(paper).all() or paper.abs().max() > 1e6
    assert torch.isfinite(safe).all()
    assert float((safe[:, :16] - 1.5).abs().mean()) < 0.5  # unguided: about 1.5


@pytest.mark.parametrize(("gradient", "inner", "nfe"), [("network", 1, 6), ("x0", 1, 6),
                                                          ("network", 2, 12)])
def test_prediction_guidance_variants_and_nfe(gradient, inner, nfe):
    model = _analytic_model()
    wins = []
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = (1.5 + 0.1 * rng.normal(size=(20, 1))).astype(np.float32)
        wins.append({"target": x, "x": x, "observed": np.ones_like(x), "scale": np.ones(1, np.float32),
                     "past": np.zeros((0, 1), np.float32)})
    stats = {}
    s = forecast(model, wins, 4, guidance="mse", scale=4.0, sampler="ddim", steps=6,
                 gradient=gradient, inner_steps=inner, progress=False, stats=stats)
    assert s.shape == (2, 4, 4, 1) and np.isfinite(s).all()
    assert stats["nfe"] == nfe


@pytest.mark.parametrize(("sampler", "kw"), [("ancestral", {}), ("ddim", {"inner_steps": 2}),
                                             ("heun", {})])
def test_forecast_nfe_equals_the_network_calls(sampler, kw):
    """The core's count (``last_nfe``, plus the DDPM rule's own denoiser) equals a hook's count."""
    model = _analytic_model()
    x = np.full((20, 1), 1.5, np.float32)
    wins = [{"target": x, "x": x, "observed": np.ones_like(x), "scale": np.ones(1, np.float32),
             "past": np.zeros((0, 1), np.float32)}] * 3
    calls = []
    hook = model.network.register_forward_pre_hook(lambda *_: calls.append(1))
    stats = {}
    try:
        forecast(model, wins, 2, guidance="mse", sampler=sampler, steps=5, batch_size=4,
                 progress=False, stats=stats, **kw)
    finally:
        hook.remove()
    assert stats["nfe"] == len(calls) / 2 > 0  # two batches (6 sequences, 4 per batch)
    if sampler == "ancestral":
        assert stats["nfe"] == 2 * 5 - 1  # TSDiff's DDPM rule: one more evaluation per step


def test_energies_hand_values():
    y = torch.tensor([[[1.0], [2.0], [0.0]]])
    m = torch.tensor([[[1.0], [1.0], [0.0]]])
    x0 = {"x": torch.tensor([[[0.0], [3.0], [9.0]]])}
    assert float(guidance_energy(y, m, "mse")(x0, None)) == pytest.approx(2.0)
    q = torch.tensor([0.25])
    # residuals y - x0 = 1 (under) and -1 (over): 0.25 * 1 + 0.75 * 1
    assert float(guidance_energy(y, m, "quantile", q)(x0, None)) == pytest.approx(1.0)
    torch.testing.assert_close(quantile_levels(4), torch.tensor([0.2, 0.4, 0.6, 0.8]))
    with pytest.raises(ValueError, match="mse"):
        guidance_energy(y, m, "l1")


def test_missing_value_scenarios():
    assert scenario_mask(10, 12, "none").tolist() == [1] * 10 + [0, 0]
    assert scenario_mask(10, 12, "blackout_begin", 0.3).tolist() == [0] * 3 + [1] * 7 + [0, 0]
    assert scenario_mask(10, 12, "blackout_end", 0.3).tolist() == [1] * 7 + [0] * 5
    rm = scenario_mask(1000, 1010, "random", 0.5, np.random.default_rng(0))
    assert 400 < rm[:1000].sum() < 600 and rm[1000:].sum() == 0
    with pytest.raises(ValueError, match="scenario"):
        scenario_mask(10, 12, "holes")


def _tiny_config(tmp_path, series_path):
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": False, "default_root_dir": str(tmp_path / "run"),
                    "limit_val_batches": 1},
        "model": {"class_path": "domaindiff_timeseries.TSDiff",
                  # lengths, lags and channels are read from the data (set once)
                  "init_args": {"hidden": 8, "num_blocks": 1, "emb_dim": 16,
                                "d_state": 4, "ema_decay": 0.9}},
        "data": {"class_path": "domaindiff_timeseries.TimeSeriesData",
                 "init_args": {"dataset": "file", "path": str(series_path),
                               "context_length": 24, "prediction_length": 8, "lags": [8],
                               "num_test_windows": 2, "batches_per_epoch": 3,
                               "batch_size": 8, "freq": "h"}},
    }
    p = tmp_path / "fit.yaml"
    OmegaConf.save(OmegaConf.create(cfg), p)
    return p


def test_fit_through_cli_checkpoint_forecast_refine_and_eval(tmp_path):
    from domaindiff.cli import lightning_cli
    from domaindiff_timeseries.evaluate import evaluate

    t = np.arange(300)
    series = [10 + np.sin(2 * math.pi * t / 8) + 0.1 * np.random.default_rng(0).normal(size=300)]
    path = tmp_path / "series.jsonl"
    write_jsonl(series, path)
    cli = lightning_cli(["fit", "--config", str(_tiny_config(tmp_path, path))])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    model = load_checkpoint(ckpt)
    assert isinstance(model, TSDiff) and model.lags == [8]
    # the checkpoint records the values the data gave, so it loads without the data
    hp = {k: model.hparams[k] for k in ("context_length", "prediction_length", "lags", "dim")}
    assert hp == {"context_length": 24, "prediction_length": 8, "lags": [8], "dim": 1}
    assert model.network.inp.in_features == 4  # value + lag 8, each with its observed mask
    dm = cli.datamodule
    wins = dm.test_windows()
    s = forecast(model, wins, 3, sampler="ddim", steps=3, progress=False)
    assert s.shape == (2, 3, 8, 1) and np.isfinite(s).all()
    base = np.repeat(s[:, :1], 3, 1)
    r = refine(model, wins, base, method="most_likely", iterations=2)
    assert r.shape == base.shape and not np.allclose(r, base)
    cfg = OmegaConf.load(
        __import__("domaindiff_timeseries").__path__[0] + "/conf/eval.yaml")
    cfg = OmegaConf.merge(cfg, {"ckpt": ckpt, "dataset": "file", "path": str(path), "freq": "h",
                                "num_test_windows": 2, "sampler": "ddim", "steps": 2,
                                "num_samples": 3, "out_dir": str(tmp_path / "ev"),
                                "methods": ["tsdiff_q", "seasonal_naive"], "plot_windows": 2,
                                "tstr_samples": 8, "anomaly": True, "anomaly_region": 24,
                                "anomaly_steps": 2, "anomaly_samples": 1,
                                "anomaly_repeats": 1, "anomaly_count": 2})
    del cfg["hydra"]
    res = evaluate(cfg)
    out = json.loads((tmp_path / "ev" / "metrics_ddim_2.json").read_text())
    assert set(out["forecasting"]) == {"tsdiff_q", "seasonal_naive"}
    # the core's count of network evaluations per sampled sequence (2-step DDIM, guided on the
    # prediction: one per step); a baseline has none
    assert out["forecasting"]["tsdiff_q"]["nfe"] == 2
    assert "nfe" not in out["forecasting"]["seasonal_naive"]
    assert out["forecasting"]["seasonal_naive"]["CRPS"] == res["forecasting"][
        "seasonal_naive"]["CRPS"]
    syn = out["synthesis"]
    assert syn["num_synthetic"] == 8 and np.isfinite(syn["linear_predictive_score_tstr"])
    assert (tmp_path / "ev" / "fan_ddim_2.png").stat().st_size > 1000
    assert 0 <= out["anomaly"]["imputation"]["f1"] <= 1
    with pytest.raises(ValueError, match="unknown"):
        evaluate(OmegaConf.merge(cfg, {"methods": ["prophet"]}))
    # a conditional checkpoint trained on other windows: one line naming both (was a numpy
    # broadcast error, found by the wheel-install README check)
    from domaindiff_timeseries.model import TSDiffCond

    cond = TSDiffCond(dim=1, context_length=model.context_length + 8,
                      prediction_length=model.prediction_length, lags=[], hidden=8)
    raw = {"state_dict": cond.state_dict(), "hyper_parameters": dict(cond.hparams)}
    cond.on_save_checkpoint(raw)
    torch.save(raw, tmp_path / "cond.ckpt")
    with pytest.raises(ValueError, match=r"cond\.ckpt: context/prediction length .* same windows"):
        evaluate(OmegaConf.merge(cfg, {"methods": ["tsdiff_cond"], "anomaly": False,
                                       "cond_ckpt": str(tmp_path / "cond.ckpt")}))


def test_ridge_score_recovers_a_linear_rule():
    from domaindiff_timeseries.synthesis import ridge_score

    rng = np.random.default_rng(0)
    c, h = 12, 4
    # windows whose horizon repeats the last 4 context steps: ridge learns it exactly
    ctx = rng.normal(size=(200, c, 1)) + 5
    train = np.concatenate([ctx, ctx[:, -h:]], 1)
    tests = []
    for _ in range(5):
        x = rng.normal(size=(c, 1)) + 5
        win = np.concatenate([x, x[-h:]]).astype(np.float32)
        tests.append({"x": win / 2.0, "scale": np.array([2.0], np.float32), "target": win})
    assert ridge_score(train, tests, c, alpha=1e-6) < 1e-4
    shuffled = np.concatenate([ctx, rng.normal(size=(200, h, 1)) + 5], 1)
    assert ridge_score(shuffled, tests, c) > 0.05


def test_deepar_tstr_runs_on_windows():
    from domaindiff_timeseries.synthesis import deepar_score

    t = np.arange(600)
    series = (10 + 3 * np.sin(2 * np.pi * t / 24)).astype(np.float32)[:, None]
    tests = [{"history": series[:e - 8], "target": series[e - 56: e]} for e in (560, 600)]
    synth = np.stack([series[s: s + 56] / 10 for s in range(0, 400, 7)])
    score = deepar_score(synth, tests, 48, epochs=1, num_samples=5, batches_per_epoch=3)
    assert np.isfinite(score) and 0 <= score < 1


def _tiny_tsdiff(**kw):
    torch.manual_seed(0)
    model = TSDiff(dim=1, context_length=12, prediction_length=4, lags=[4], hidden=8,
                   num_blocks=1, emb_dim=8, d_state=4, **kw)
    torch.nn.init.normal_(model.network.head[-1].weight, std=0.5)  # a non-zero prediction
    return model


def _gappy_batch():
    from domaindiff_timeseries.data import make_window

    t = np.arange(80)
    s = (10 + np.sin(2 * np.pi * t / 8)).astype(np.float32)[:, None]
    s[30:33] = np.nan  # in the contexts of the windows ending at 40, 44 and (step 32) 48
    s[45] = np.nan  # in the horizon of the window ending at 48
    wins = [make_window(s, e, 12, 4, 4) for e in (40, 44, 48, 70)]
    return {k: torch.as_tensor(np.stack([w[k] for w in wins])) for k in wins[0]
            if k != "target"}, wins


def test_loss_counts_only_observed_positions_hand_computed():
    from domaindiff.losses import sample_time

    model = _tiny_tsdiff()
    batch, _ = _gappy_batch()
    state = model.batch_to_state(batch)
    obs = state["observed"]
    assert (obs == 0).sum() == 3 + 3 + 2
    model._gen = torch.Generator().manual_seed(7)
    loss = model.loss(state)
    # by hand: the same times and noise, squared eps error averaged over observed entries only
    gen = torch.Generator().manual_seed(7)
    proc = model.processes["x"]
    t = sample_time(4, proc, "uniform", gen)
    eps = torch.randn(state["x"].shape, generator=gen)
    xt = proc.alpha(t)[:, None, None] * state["x"] + proc.sigma(t)[:, None, None] * eps
    pred = model.network({**state, "x": xt}, t)["x"]
    per = ((pred - eps) ** 2 * obs).sum((1, 2)) / obs.sum((1, 2))
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-6)
    # counting the placeholders as data would give another value
    full = ((pred - eps) ** 2).mean((1, 2)).mean()
    assert abs(full.item() - loss.item()) > 1e-6
    # a complete batch: exactly the core's loss
    done = {**state, "observed": torch.ones_like(obs)}
    model._gen = torch.Generator().manual_seed(7)
    from domaindiff.module import DiffusionModule

    a = model.loss(done)
    model._gen = torch.Generator().manual_seed(7)
    assert a.item() == DiffusionModule.loss(model, done).item()


def test_missing_indicator_tells_the_network_which_inputs_are_placeholders():
    model = _tiny_tsdiff()
    batch, _ = _gappy_batch()
    state = model.batch_to_state(batch)
    t = torch.full((4,), 0.5)
    net = model.network
    a = net(state, t)["x"]
    b = net({**state, "observed": torch.ones_like(state["observed"])}, t)["x"]
    assert not torch.allclose(a[:3], b[:3])  # windows with gaps: the mask is an input
    torch.testing.assert_close(a[3], b[3])  # the complete window: no change
    plain = _tiny_tsdiff(missing_indicator=False)
    assert plain.network.inp.in_features == 2 and net.inp.in_features == 4


def test_forecast_treats_missing_context_values_as_unknown():
    model = _tiny_tsdiff()
    _, wins = _gappy_batch()
    a = forecast(model, wins, 2, sampler="ddim", steps=3, seed=1)
    assert a.shape == (4, 2, 4, 1) and np.isfinite(a).all()
    # any value hidden behind a missing position changes nothing: it is not an observation
    moved = [dict(w) for w in wins]
    for w in moved:
        w["target"] = np.where(w["observed"] > 0, w["target"], 1e6).astype(np.float32)
    b = forecast(model, moved, 2, sampler="ddim", steps=3, seed=1)
    np.testing.assert_array_equal(a, b)
    # the guidance mask excludes them: a mask that (wrongly) observed them moves the forecast
    forced = [dict(w, observed=np.ones_like(w["observed"])) for w in moved]
    c = forecast(model, forced, 2, sampler="ddim", steps=3, seed=1)
    assert not np.allclose(a[:3], c[:3])


def test_anomaly_scores_skip_missing_steps():
    from domaindiff_timeseries.anomaly import series_scores

    model = TSDiff(dim=1, context_length=24, prediction_length=8, lags=[], hidden=8,
                   num_blocks=1, emb_dim=8, d_state=4)
    model.network = _GaussianEps(model.processes["x"])
    model.ema_network = None
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(96, 1)) * 0.3 + 1.0).astype(np.float32)
    y[80] += 4.0
    y[70:73] = np.nan  # missing: neither known to the inpainting nor scored
    s = series_scores(model, y, 64, stride=8, steps=10, num_samples=2, record_last=3)
    assert np.isnan(s[6:9]).all() and np.isfinite(np.delete(s, [6, 7, 8])).all()
    assert int(np.nanargmax(s)) == 16


def test_fit_and_eval_on_a_series_with_gaps(tmp_path):
    from domaindiff.cli import lightning_cli
    from domaindiff_timeseries.data import MissingValuesWarning
    from domaindiff_timeseries.evaluate import evaluate

    t = np.arange(300)
    s = 10 + np.sin(2 * math.pi * t / 8) + 0.1 * np.random.default_rng(0).normal(size=300)
    s[[40, 41, 42, 150, 290]] = np.nan  # step 290 lies in a test horizon: scored as unobserved
    path = tmp_path / "gaps.jsonl"
    write_jsonl([s], path)
    with pytest.warns(MissingValuesWarning, match="5 of 300 values missing"):
        cli = lightning_cli(["fit", "--config", str(_tiny_config(tmp_path, path))])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    cfg = OmegaConf.load(
        __import__("domaindiff_timeseries").__path__[0] + "/conf/eval.yaml")
    cfg = OmegaConf.merge(cfg, {"ckpt": ckpt, "dataset": "file", "path": str(path), "freq": "h",
                                "num_test_windows": 2, "sampler": "ddim", "steps": 2,
                                "num_samples": 3, "out_dir": str(tmp_path / "ev"),
                                "methods": ["tsdiff_q", "seasonal_naive"], "plot_windows": 1,
                                "tstr_samples": 8, "anomaly": False})
    del cfg["hydra"]
    res = evaluate(cfg)["forecasting"]
    for m in ("tsdiff_q", "seasonal_naive"):
        assert all(np.isfinite(v) for k, v in res[m].items() if k in ("CRPS", "ND", "MASE")), res


def test_checkpoint_from_before_the_missing_indicator_still_loads():
    old = TSDiff(dim=1, context_length=12, prediction_length=4, lags=[4], hidden=8,
                 num_blocks=1, emb_dim=8, d_state=4, missing_indicator=False)
    hp = {k: v for k, v in old.hparams.items() if k != "missing_indicator"}
    new = TSDiff(**hp)
    assert new.network.missing_indicator
    new.load_state_dict(old.state_dict())
    assert not new.network.missing_indicator and not new.hparams["missing_indicator"]
    state = {"x": torch.randn(2, 16, 1), "past": torch.randn(2, 4, 1)}
    t = torch.full((2,), 0.3)
    torch.testing.assert_close(new.denoiser()(state, t)["x"], old.denoiser()(state, t)["x"])
    # a genuinely wrong checkpoint still fails
    with pytest.raises(RuntimeError, match="size mismatch"):
        TSDiff(**{**hp, "hidden": 16}).load_state_dict(old.state_dict())
