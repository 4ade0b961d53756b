import torch

from domaindiff.processes import Bernoulli
from domaindiff.samplers import sample_bernoulli


def _exact_denoiser(proc, p):
    """P(x0 = 1 | x_t) for iid Bern(p) pixels: Bayes with the exact marginal."""

    def den(state, t):
        x = state["x"]
        i = torch.round(t * proc.num_steps).long()
        a = proc.abar[i].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        lik1 = torch.where(x > 0.5, a + (1 - a) / 2, (1 - a) / 2)
        lik0 = torch.where(x > 0.5, (1 - a) / 2, a + (1 - a) / 2)
        return {"x": p * lik1 / (p * lik1 + (1 - p) * lik0)}

    return den


def test_bernoulli_sampler_reaches_the_data_distribution():
    proc = Bernoulli(num_steps=100, beta_start=1e-3, beta_end=0.1)
    den = _exact_denoiser(proc, 0.8)
    for steps in (100, 10):  # full chain and exact skip steps
        out = sample_bernoulli(den, proc, (4000, 4), steps, threshold=None,
                               generator=torch.Generator().manual_seed(0))
        # the last step returns P(x0 = 1 | x_1): its average must be the data frequency
        assert abs(float(out.mean()) - 0.8) < 0.02, steps


def test_bernoulli_threshold_and_template():
    proc = Bernoulli(num_steps=50)
    den = _exact_denoiser(proc, 0.9)
    state = {"x": torch.zeros(8, 3), "image": torch.ones(8, 3)}
    out = sample_bernoulli(den, proc, state, 5, threshold=0.5)
    assert set(out["x"].unique().tolist()) <= {0.0, 1.0} and torch.equal(out["image"],
                                                                          state["image"])
