"""End to end: a short Lightning run learns an n-D Gaussian well enough to sample and score it."""

import lightning as L
import torch

from domaindiff.likelihood import log_likelihood
from domaindiff.toy import GaussianMixtureData, ToyDiffusion


def test_toy_training_learns_an_nd_gaussian(tmp_path):
    L.seed_everything(0)
    data = GaussianMixtureData(mixture="gaussian", dim=4, num_train=4096, num_val=256,
                               batch_size=256)
    model = ToyDiffusion(dim=4, hidden=64, depth=2, lr=3e-3, ema_decay=0.99, num_val_samples=0)
    trainer = L.Trainer(max_epochs=25, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    x = model.sample(4000, sampler="dpm_solver_pp_2m", steps=20,
                     generator=torch.Generator().manual_seed(0))["x"].double()
    mix = data.mixture
    cov_true = mix.covs[0]
    assert (x.mean(0) - mix.means[0]).abs().max() < 0.15
    assert (torch.cov(x.T) - cov_true).abs().max() < 0.2 * cov_true.diagonal().max()
    test = mix.sample(32, torch.Generator().manual_seed(1))
    ll = log_likelihood(model.denoiser(), model.processes, test, exact=True, rtol=1e-4,
                        atol=1e-4)
    nll_model, nll_true = float(-ll["logp"].mean()), float(-mix.log_prob(test).mean())
    assert nll_true - 0.1 < nll_model < nll_true + 0.6, (nll_model, nll_true)


def test_module_generator_is_seeded_once_and_advances():
    """Two calls to sample() draw different noise; a fresh module with the same seed repeats it."""
    torch.manual_seed(0)
    a = ToyDiffusion(dim=2, hidden=16, depth=1, num_val_samples=0, seed=3)
    first = a.sample(8, sampler="ddim", steps=3)["x"]
    second = a.sample(8, sampler="ddim", steps=3)["x"]
    assert not torch.allclose(first, second)
    torch.manual_seed(0)
    b = ToyDiffusion(dim=2, hidden=16, depth=1, num_val_samples=0, seed=3)
    torch.testing.assert_close(b.sample(8, sampler="ddim", steps=3)["x"], first)
    assert a.generator is a.generator


def test_sample_reports_its_network_evaluations():
    """``last_nfe`` is the number of network calls, which ``steps`` budgets for every sampler."""
    model = ToyDiffusion(dim=2, hidden=8, depth=1, num_val_samples=0, seed=0)
    assert model.last_nfe == 0
    for name, steps, opts, expected in [("ddim", 7, {}, 7), ("dpm_solver_pp_2m", 10, {}, 10),
                                        ("heun", 9, {}, 9), ("dpm_solver", 9, {"order": 3}, 9),
                                        ("pc", 10, {}, 10)]:
        model.sample(4, sampler=name, steps=steps, **opts)
        assert model.last_nfe == expected, name
