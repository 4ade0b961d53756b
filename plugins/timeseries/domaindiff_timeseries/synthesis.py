"""Synthesis: unconditional TSDiff samples scored by train-on-synthetic, test-on-real (TSTR).

The linear predictive score (LPS) is the test CRPS of a ridge regression from the (scaled)
context to the (scaled) horizon, trained on synthetic windows and tested on the real test windows;
the same regression trained on real training windows (TRTR) is the reference. The same protocol
with GluonTS's DeepAR (:func:`deepar_score`: trained on the synthetic windows as short series,
forecasting the real test windows from their histories) is the paper's second TSTR model.

Lag channels read the clean history before the window; for synthesis that history is taken from
random real training windows (the window itself is generated unconditionally).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from domaindiff_timeseries.metrics import crps


@torch.no_grad()
def synthesize(model, data, n: int, *, sampler: str = "ancestral", steps: int | None = None,
               batch_size: int = 500, seed: int = 0) -> np.ndarray:
    """``n`` unconditional scaled windows ``(n, L, D)``."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    data.setup()
    out = []
    for s0 in range(0, n, batch_size):
        b = min(batch_size, n - s0)
        idx = torch.randint(len(data.train_set), (b,), generator=torch.Generator().manual_seed(
            seed + s0))
        items = [data.train_set[int(i)] for i in idx]
        past = torch.stack([it["past"] for it in items]).to(model.device)
        past_obs = torch.stack([it["past_observed"] for it in items]).to(model.device)
        if not model.lags:
            past, past_obs = past[:, :0], past_obs[:, :0]
        tmpl = {"x": torch.zeros(b, model.length, model.dim, device=model.device), "past": past,
                "past_observed": past_obs}
        out.append(model.sample(template=tmpl, sampler=sampler, steps=steps, generator=gen)["x"]
                   .cpu())
    return torch.cat(out).numpy()


def ridge_score(train_windows: np.ndarray, test_windows: Sequence[dict], context_length: int,
                alpha: float = 1.0) -> float:
    """CRPS on the real test windows of a ridge model fit on scaled ``(N, L, D)`` windows."""
    from sklearn.linear_model import Ridge

    tr = np.asarray(train_windows, np.float64)
    n, length, d = tr.shape
    xtr = tr[:, :context_length].transpose(0, 2, 1).reshape(n * d, context_length)
    ytr = tr[:, context_length:].transpose(0, 2, 1).reshape(n * d, length - context_length)
    reg = Ridge(alpha=alpha).fit(xtr, ytr)
    preds, targets = [], []
    for w in test_windows:
        x = w["x"][:context_length].T  # (D, C), scaled
        preds.append((reg.predict(x) * w["scale"][:, None]).T)
        targets.append(w["target"][context_length:])
    return crps(np.stack(preds)[:, None], np.stack(targets))


def real_windows(data, n: int) -> np.ndarray:
    """``n`` scaled real training windows ``(n, L, D)`` (the TRTR reference)."""
    data.setup()
    return np.stack([data.train_set[i]["x"].numpy() for i in range(min(n, len(data.train_set)))])


def deepar_score(train_windows: np.ndarray, test_windows: Sequence[dict], context_length: int,
                 freq: str = "h", epochs: int = 5, num_samples: int = 100,
                 batches_per_epoch: int = 50, seed: int = 0) -> float:
    """CRPS on the real test windows of a GluonTS DeepAR trained on ``(N, L, D)`` windows.

    Each (scaled) window is one training series of ``L`` steps; DeepAR's own mean scaling makes
    the units irrelevant. Test forecasts condition on each test window's real history.
    """
    from domaindiff_timeseries.baselines import deepar

    tr = np.asarray(train_windows, np.float32)
    h = tr.shape[1] - context_length
    fc = deepar(list(tr), test_windows, h, context_length, freq, num_samples, epochs,
                batches_per_epoch=batches_per_epoch, seed=seed)
    return crps(fc, np.stack([w["target"][context_length:] for w in test_windows]))
