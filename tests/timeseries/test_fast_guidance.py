"""Several guidance steps per network evaluation (``x0_steps``) on an exact Gaussian denoiser.

The data are ``N(0, S)`` windows with an AR(1) covariance ``S_ij = rho^|i-j|``; the denoiser is
the exact eps-predictor of that Gaussian under the model's own diffusion, so the prediction and
the conditional law of the horizon given the context are known in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domaindiff_timeseries.forecast import PredictionSelfGuidance, forecast, guidance_energy
from domaindiff_timeseries.model import TSDiff

C, H, RHO = 12, 4, 0.9


def _cov(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return RHO ** (i[:, None] - i[None, :]).abs()


class _GaussianEps(torch.nn.Module):
    """Exact eps-predictor of N(0, S) data: x0_hat = a S (a^2 S + s^2 I)^-1 x_t."""

    def __init__(self, proc, n: int) -> None:
        super().__init__()
        self.proc, self.cov = proc, _cov(n)

    def forward(self, state, t):
        a, s = self.proc.alpha(t[:1]).double(), self.proc.sigma(t[:1]).double()
        x = state["x"][..., 0].double()
        gain = a * self.cov @ torch.linalg.inv(a**2 * self.cov + s**2 * torch.eye(len(self.cov)))
        x0 = x @ gain.T
        return {"x": ((x - a * x0) / s).float()[..., None]}


def _model() -> TSDiff:
    model = TSDiff(dim=1, context_length=C, prediction_length=H, lags=[], hidden=8, num_blocks=1,
                   emb_dim=8, d_state=4)
    model.network = _GaussianEps(model.processes["x"], C + H)
    model.ema_network = None
    return model.eval()


def _windows(n: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(_cov(C + H).numpy())
    out = []
    for _ in range(n):
        x = (chol @ rng.standard_normal(C + H)).astype(np.float32)[:, None] + 5.0  # scale ~5
        out.append({"target": x, "x": x / 5.0, "past": np.zeros((0, 1), np.float32),
                    "scale": np.ones(1, np.float32), "observed": np.ones_like(x)})
    return out


def _context_error(model, x0_steps: int, seed: int = 0) -> float:
    """Mean |x0_hat - y| on the context after one guided prediction."""
    n = 32
    y = torch.randn(n, C + H, 1, generator=torch.Generator().manual_seed(1))
    m = torch.zeros_like(y)
    m[:, :C] = 1
    guide = PredictionSelfGuidance(guidance_energy(y, m, "mse"), 4.0, x0_steps=x0_steps)
    x = {"x": torch.randn(n, C + H, 1, generator=torch.Generator().manual_seed(seed)),
         "past": torch.zeros(n, 0, 1)}
    t = torch.full((n,), 0.5)

    p = model.processes["x"]
    a, s = p.alpha(t[:1]), p.sigma(t[:1])

    class _M:  # the sampler's view of the model: its processes and unguided prediction
        procs = {"x": p}

        @staticmethod
        def raw_predict(state, tt):
            e = model.network(state, tt)["x"]
            return {"x": (state["x"] - s * e) / a}, {"x": e}

    x0, eps = guide.predict(_M, x, t)
    # eps stays consistent with the guided prediction
    torch.testing.assert_close(eps["x"], (x["x"] - a * x0["x"]) / s, rtol=1e-4, atol=1e-4)
    return float(((x0["x"] - y) * m).abs().sum() / m.sum())


def test_x0_steps_pull_the_prediction_to_the_context_without_network_calls():
    model = _model()
    errs = [_context_error(model, k) for k in (0, 1, 4, 16)]
    assert errs[1] < errs[0] and errs[2] < errs[1] and errs[3] <= errs[2]
    assert errs[3] < 0.5 * errs[0]


def test_x0_steps_keep_the_nfe_and_bring_the_forecast_nearer_the_conditional_mean():
    model = _model()
    wins = _windows()
    cov = _cov(C + H).numpy()
    s_hc, s_cc = cov[C:, :C], cov[:C, :C]
    want = np.stack([s_hc @ np.linalg.solve(s_cc, w["x"][:C, 0]) * 5.0 for w in wins])
    err, nfe = {}, {}
    for k in (0, 4):
        st: dict = {}
        s = forecast(model, wins, 64, guidance="mse", scale=4.0, sampler="ddim", steps=10,
                     eta=1.0, x0_steps=k, progress=False, stats=st, seed=0)
        nfe[k] = st["nfe"]
        err[k] = float(np.abs(s.mean(1)[..., 0] - want).mean())
    assert nfe[0] == nfe[4] == 10
    assert err[4] < err[0]


def test_bad_x0_steps_are_refused():
    with pytest.raises(ValueError, match="x0_steps must be an integer >= 0, got -1"):
        PredictionSelfGuidance(lambda x0, t: x0["x"].sum(), 1.0, x0_steps=-1)
    with pytest.raises(ValueError, match="x0_steps guides the prediction: not with TSDiff's DDPM"):
        forecast(_model(), _windows(1), 2, sampler="ancestral", x0_steps=2, progress=False)
