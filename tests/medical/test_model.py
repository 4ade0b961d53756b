"""Echo-DND module: processes, loss, samplers, post-processing, training and checkpoints."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from domaindiff.module import load_checkpoint
from domaindiff_medical import EchoDND, SyntheticEcho, evaluate
from domaindiff_medical.model import bernoulli_kl, postprocess
from domaindiff_medical.networks import EchoDNDNet, UNetBaseline


def _model(**kw):
    args = dict(base_channels=8, levels=2, temb_dim=16, num_steps=50, ema_decay=0.0)
    args.update(kw)
    return EchoDND(**args)


def _batch(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 1, size, size)
    m[:, :, 4:12, 5:11] = 1
    return {"image": torch.rand(n, 1, size, size, generator=g), "mask": m}


def test_bernoulli_forward_matches_paper_formula():
    model = _model()
    x0 = torch.tensor([0.0, 1.0]).repeat(20000)
    i = torch.full((x0.shape[0],), 20)
    xs = model.bern.q_sample(x0, i, generator=torch.Generator().manual_seed(0))
    abar = float(torch.prod(1 - torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)[:20]))
    for v in (0.0, 1.0):
        want = abar * v + (1 - abar) / 2
        assert xs[x0 == v].mean().item() == pytest.approx(want, abs=0.01)


def test_bernoulli_posterior_is_bayes_rule():
    # q(x_{j} | x_i, x0) computed by brute-force enumeration of the two-step chain
    model = _model()
    bern = model.bern
    i, j = torch.tensor([30]), torch.tensor([10])
    a_i, a_j = bern.abar[30].item(), bern.abar[10].item()
    for x0 in (0.0, 1.0):
        for xi in (0.0, 1.0):
            pj = a_j * x0 + (1 - a_j) / 2
            r = a_i / a_j

            def lik(xj, xi=xi, r=r):
                p1 = r * xj + (1 - r) / 2
                return p1 if xi == 1 else 1 - p1
            want = pj * lik(1.0) / (pj * lik(1.0) + (1 - pj) * lik(0.0))
            got = bern.posterior_prob(torch.tensor([xi]), torch.tensor([x0]), i, j)
            assert got.item() == pytest.approx(want, rel=1e-5)


def test_kl_zero_iff_equal():
    q = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(bernoulli_kl(q, q), torch.zeros(3), atol=1e-6)
    assert (bernoulli_kl(q, q.flip(0))[[0, 2]] > 0.1).all()


def test_network_shapes_and_probabilities():
    net = EchoDNDNet(8, 3, 16)
    x = torch.randn(2, 1, 32, 32)
    eps, prob, cal, var, logit = net(x, x, (x > 0).float(), torch.rand(2))
    assert eps.shape == prob.shape == cal.shape == (2, 1, 32, 32) and var is None
    assert prob.min() >= 0 and prob.max() <= 1 and cal.min() >= 0 and cal.max() <= 1
    assert torch.allclose(torch.sigmoid(logit), prob)
    out = EchoDNDNet(8, 3, 16, learn_sigma=True)(x, x, (x > 0).float(), torch.rand(2))
    assert out.eps.shape == out.var.shape == (2, 1, 32, 32) and out.var.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible"):
        net(x[..., :30, :30], x[..., :30, :30], x[..., :30, :30], torch.rand(2))
    assert UNetBaseline(8, 2)(x).shape == (2, 1, 32, 32)


def test_loss_terms_and_gradients_reach_every_part():
    model = _model()
    terms = model.loss_terms(_batch())
    assert set(terms) == {"mse", "bce", "kl", "cal", "vlb"}
    assert set(_model(learn_sigma=False).loss_terms(_batch())) == {"mse", "bce", "kl", "cal"}
    assert all(torch.isfinite(v) and v >= 0 for v in terms.values())
    model.loss(_batch()).backward()
    net = model.network
    for part in (net.encoder, net.gauss, net.bern, net.temb):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)


def test_sampling_is_deterministic_per_seed_and_fuses_both_branches():
    model = _model()
    img = _batch(2)["image"]
    a = model.dual_sample(img, 5, "ddim", generator=torch.Generator().manual_seed(1))
    b = model.dual_sample(img, 5, "ddim", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["prob"], b["prob"])
    assert torch.allclose(a["prob"], (a["gauss"] + a["bern"]) / 2)
    short = _model(num_steps=10)
    full = short.dual_sample(img, 10, "ddpm", generator=torch.Generator().manual_seed(1))
    assert full["prob"].shape == img.shape and 0 <= full["prob"].min() <= full["prob"].max() <= 1


@pytest.mark.parametrize("call", ["sample", "dual_sample", "segment"])
def test_an_unknown_sampler_name_is_an_error_naming_it_and_the_valid_ones(call):
    model = _model()
    batch = _batch(2)
    with pytest.raises(ValueError, match=r"unknown sampler 'heun2'.*ddim"):
        if call == "sample":
            model.sample(2, batch=batch, sampler="heun2", steps=2)
        else:
            getattr(model, call)(batch["image"], steps=2, sampler="heun2")
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*ddim"):
        _model(dual_sampler="nope")
    with pytest.raises(ValueError, match=r"bernoulli.*'coin'.*posterior"):
        model.sample(2, batch=batch, steps=2, bernoulli="coin")


def test_use_ema_selects_the_ema_weights_and_false_the_raw_ones():
    torch.manual_seed(0)
    model = _model(ema_decay=0.9)
    with torch.no_grad():  # make the EMA copy differ from the raw weights
        for p in model.ema_network.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    raw = _model(ema_decay=0.0)
    raw.network.load_state_dict(model.network.state_dict())
    ema = _model(ema_decay=0.0)
    ema.network.load_state_dict(model.ema_network.module.state_dict())
    batch = _batch(2)

    def draw(m, **kw):
        return m.sample(2, batch=batch, steps=3, num_samples=2,
                        generator=torch.Generator().manual_seed(3), **kw)["prob"]

    assert torch.equal(draw(model), draw(ema))
    assert torch.equal(draw(model, use_ema=False), draw(raw))
    assert not torch.equal(draw(model), draw(model, use_ema=False))


def test_core_guidance_applies_to_the_gaussian_branch():
    from domaindiff.guidance import Inpainting
    model = _model()
    batch = _batch(2)
    target = 2 * batch["mask"] - 1  # the Gaussian branch's scale
    guide = Inpainting({"mask": target}, {"mask": torch.ones_like(target)})
    out = model.dual_sample(batch["image"], 4, "ddim", guidance=guide,
                            generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["gauss"], batch["mask"])  # every pixel known: the observation


@pytest.mark.parametrize("noise", ["gaussian", "bernoulli"])
def test_single_noise_ablations_train_and_fuse_one_branch(noise):
    model = _model(noise=noise)
    out = model.dual_sample(_batch(2)["image"], 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["prob"], out["gauss" if noise == "gaussian" else "bern"])
    loss = model.loss(_batch(2))
    loss.backward()
    unused = model.network.bern if noise == "gaussian" else model.network.gauss
    assert all(p.grad is None for p in unused.parameters())
    with pytest.raises(ValueError, match="noise"):
        _model(noise="poisson")


def test_segment_ensemble_statistics():
    model = _model()
    out = model.segment(_batch(3)["image"], num_samples=4, steps=3,
                        generator=torch.Generator().manual_seed(0))
    assert out["samples"].shape == (4, 3, 1, 16, 16)
    assert torch.allclose(out["prob"], out["samples"].mean(0))
    assert torch.allclose(out["var"], out["samples"].var(0, unbiased=False))
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}


def test_postprocess_keeps_largest_component_and_opens():
    p = torch.zeros(1, 1, 20, 20)
    p[0, 0, 2:10, 2:10] = 0.9      # big blob
    p[0, 0, 9:10, 10:16] = 0.8     # one-pixel-wide spur attached to it
    p[0, 0, 15:18, 15:18] = 0.7    # small separate blob
    p[0, 0, 0, 0] = 0.4            # below threshold
    m = postprocess(p)[0, 0]
    want = torch.zeros(20, 20)
    want[2:10, 2:10] = 1
    assert torch.equal(m, want)


def test_training_learns_and_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    dm = SyntheticEcho(num_train=16, num_val=4, num_test=4, size=16, batch_size=8,
                       generator="simple")
    model = _model(lr=5e-3, base_channels=4, num_val_samples=2, sampling_steps=2,
                   num_ensemble=1)
    batch = next(iter(DataLoader(dm.dataset("train"), batch_size=16)))
    i = torch.full((16,), 25)
    before = model.loss_terms(batch, i=i)
    trainer = L.Trainer(max_steps=10, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=1,
                        num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, dm)
    assert {"val/dice", "val/iou", "val/loss"} <= set(trainer.callback_metrics)
    assert 0 <= float(trainer.callback_metrics["val/dice"]) <= 1
    after = model.loss_terms(batch, i=i)
    assert after["bce"] < before["bce"] and after["cal"] < before["cal"]
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_checkpoint(ckpt)
    assert isinstance(loaded, EchoDND) and loaded.hparams.num_steps == 50
    g = torch.Generator()
    x = batch["image"][:2]
    a = model.dual_sample(x, 3, generator=g.manual_seed(0))["prob"]
    b = loaded.dual_sample(x, 3, generator=g.manual_seed(0))["prob"]
    assert torch.allclose(a, b, atol=1e-6)
    # the Hydra evaluation app on that checkpoint: JSON + PNG
    from omegaconf import OmegaConf

    from domaindiff_medical.evaluate import run
    cfg = OmegaConf.load(Path(evaluate.__file__).parent / "conf" / "eval.yaml")
    cfg.update({"ckpt": str(ckpt), "size": 16, "max_images": 3, "steps": 2, "num_samples": 2,
                "out_dir": str(tmp_path / "eval"), "num_overlays": 2, "generator": "simple"})
    summary = run(cfg)
    saved = json.loads((tmp_path / "eval" / "metrics_ddim_2.json").read_text())
    assert saved["num_images"] == 3 and saved["nfe_per_image"] == 4
    assert 0 <= saved["dice"] <= 1 and saved["dice"] == pytest.approx(summary["dice"])
    png = (tmp_path / "eval" / "overlays_ddim_2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_clip_x0_clips_the_predicted_mask_and_keeps_the_network_noise():
    from domaindiff.samplers.base import Model
    from domaindiff_medical.model import ClipX0
    model = _model()
    procs = model.processes
    x = {"image": torch.zeros(2, 1, 4, 4), "mask": 3 * torch.randn(2, 1, 4, 4)}
    net = Model(lambda s, t: {"mask": torch.full_like(s["mask"], -2.0)}, procs)
    t = torch.full((2,), 0.9)
    x0, eps = net.raw_predict(x, t)
    cx0, ceps = ClipX0().predict(net, x, t)
    assert torch.equal(ceps["mask"], eps["mask"])
    assert torch.equal(cx0["mask"], x0["mask"].clamp(-1, 1)) and x0["mask"].abs().max() > 1
