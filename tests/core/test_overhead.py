"""The overhead benchmark's guard: diffusers is a benchmark extra, and its absence is one line."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "core_overhead.py"


def _load():
    spec = importlib.util.spec_from_file_location("core_overhead_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_diffusers_is_one_line_naming_the_extra(monkeypatch):
    mod = _load()
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(SystemExit, match=r"diffusers, which is not installed: pip install "
                                         r"'domaindiff\[bench\]'"):
        mod.require_diffusers()


def test_the_benchmark_denoiser_is_the_exact_mixture_eps():
    """MixtureEps is -sigma * the mixture's score at alpha_bar[k] (checked by autograd)."""
    mod = _load()
    abar = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)
    core = mod.MixtureEps(abar, dim=3, components=4)
    x = torch.randn(5, 3)
    k = 6
    a2 = float(abar[k])
    xg = x.double().requires_grad_(True)
    mu, var = (a2**0.5) * core.mu.double(), (a2 * core.c2 + 1 - a2).double()
    logp = torch.logsumexp(-0.5 * ((xg[:, None] - mu) ** 2).sum(-1) / var
                           - 1.5 * torch.log(var), 1).sum()
    (score,) = torch.autograd.grad(logp, xg)
    torch.testing.assert_close(core.at_step(x, k).double(), -(1 - a2) ** 0.5 * score,
                               rtol=1e-4, atol=1e-5)
