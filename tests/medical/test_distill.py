"""Echo-DND students: the Bernoulli branch as a walked state (``domaindiff.distill.walk``).

The walk's states and kernels (0/1 states at each sample's step, the sampler's kernels, affine in
the prediction), the exactness of the two-steps-in-one target with the true posterior denoiser,
the loss's states (Bernoulli states 0/1, the image passed through), and a tiny
``domaindiff distill`` whose student ``domaindiff eval medical`` runs with 1 and 4 steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from domaindiff.data import atomic_save
from domaindiff.distill.lightning import Distillation
from domaindiff.distill.walk import WalkProgressive, walk_loss
from domaindiff.processes import Bernoulli
from domaindiff_medical import EchoDND, evaluate
from domaindiff_medical.distill import BERN_KEY, EchoWalk, walk_steps
from domaindiff_medical.model import bernoulli_ddim_prob

N = 20


def _teacher(path: Path, size: int = 16) -> Path:
    torch.manual_seed(0)
    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=N, ema_decay=0.0)
    model.batch_to_state({"image": torch.zeros(1, 1, size, size),
                          "mask": torch.zeros(1, 1, size, size)})
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    atomic_save(ckpt, path)
    return path


def test_walk_steps_round_as_the_samplers_walk():
    t = torch.tensor([1.0, 0.51, 0.5, 0.026, 0.0])
    assert walk_steps(t, 50).tolist() == [50, 26, 25, 1, 0]


@pytest.mark.parametrize("kind", ["posterior", "ddim"])
def test_walk_states_are_binary_and_kernels_are_the_samplers(kind):
    proc = Bernoulli(N)
    walk = EchoWalk(proc, kind)
    gen = torch.Generator().manual_seed(0)
    m = (torch.rand(6, 1, 8, 8, generator=gen) < 0.4).float()
    t = torch.tensor([1.0, 0.7, 0.5, 0.3, 0.1, 0.05])
    y = walk.forward({"mask": 2 * m - 1}, t, gen)[BERN_KEY]
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    # at step 1 the state is almost the mask; at step N almost a fair coin
    near = walk.forward({"mask": 2 * m - 1}, torch.full((6,), 1 / N), gen)[BERN_KEY]
    assert (near == m).float().mean() > 0.97
    pred = torch.rand(6, 1, 8, 8, generator=gen)
    s = torch.tensor([0.5, 0.5, 0.25, 0.3, 0.0, 0.0])  # sample 3: the same step (kept)
    out = walk.transition({BERN_KEY: y}, {BERN_KEY: pred}, t, s)[BERN_KEY]
    i, j = walk_steps(t, N), walk_steps(s, N)
    for b in range(6):
        if j[b] == i[b]:
            ref = y[b]
        elif kind == "posterior":
            ref = proc.reverse_prob(y[b:b + 1], pred[b:b + 1], i[b:b + 1], j[b:b + 1])[0]
        else:
            ref = bernoulli_ddim_prob(y[b], pred[b], proc.abar[i[b]].float(),
                                      proc.abar[j[b]].float())
        torch.testing.assert_close(out[b], ref)
    torch.testing.assert_close(out[4:], pred[4:])  # into t = 0: the prediction itself
    # affine in the prediction: K(p) = p K(1) + (1 - p) K(0)
    k1 = walk.transition({BERN_KEY: y}, {BERN_KEY: torch.ones_like(y)}, t, s)[BERN_KEY]
    k0 = walk.transition({BERN_KEY: y}, {BERN_KEY: torch.zeros_like(y)}, t, s)[BERN_KEY]
    torch.testing.assert_close(out, pred * k1 + (1 - pred) * k0)


@pytest.mark.parametrize("prior", [0.3, 0.8])
def test_two_exact_steps_make_the_one_step_target_the_true_posterior(prior):
    """With the true denoiser ``P(m = 1 | y_i)`` (one pixel, ``m ~ Bern(prior)``), the teacher's
    two-step marginal is one exact step: the walk target ``(E P_T - K0) / (K1 - K0)`` at the
    student's ``(y_t, t)`` equals the true posterior there (Chapman-Kolmogorov)."""
    proc = Bernoulli(N)
    walk = EchoWalk(proc, "posterior")

    def truth(y: torch.Tensor, i: int) -> torch.Tensor:
        ii = torch.tensor([i])
        q1 = proc.marginal_prob(torch.ones(1, dtype=torch.float64), ii)
        q0 = proc.marginal_prob(torch.zeros(1, dtype=torch.float64), ii)
        l1 = torch.where(y == 1, q1, 1 - q1) * prior
        l0 = torch.where(y == 1, q0, 1 - q0) * (1 - prior)
        return l1 / (l1 + l0)

    for i, j1, j2 in ((12, 8, 4), (8, 5, 0), (20, 10, 1)):
        t, t1, t2 = (torch.tensor([v / N], dtype=torch.float64) for v in (i, j1, j2))
        for y in (0.0, 1.0):
            y_t = {BERN_KEY: torch.tensor([y], dtype=torch.float64)}
            p_t = truth(y_t[BERN_KEY], i)
            up = walk.transition(y_t, {BERN_KEY: p_t}, t, t1)[BERN_KEY]  # P(y_j1 = 1)
            exp_target = torch.zeros(1, dtype=torch.float64)
            for y1, w in ((1.0, up), (0.0, 1 - up)):
                y_1 = {BERN_KEY: torch.tensor([y1], dtype=torch.float64)}
                p_1 = truth(y_1[BERN_KEY], j1)
                exp_target += w * walk.transition(y_1, {BERN_KEY: p_1}, t1, t2)[BERN_KEY]
            one = {BERN_KEY: torch.ones(1, dtype=torch.float64)}
            zero = {BERN_KEY: torch.zeros(1, dtype=torch.float64)}
            k1 = walk.transition(y_t, one, t, t2)[BERN_KEY]
            k0 = walk.transition(y_t, zero, t, t2)[BERN_KEY]
            torch.testing.assert_close((exp_target - k0) / (k1 - k0), p_t)
            # and the loss vanishes at it (the student's kernel is the expected target)
            loss = walk_loss(walk, y_t, {BERN_KEY: p_t.view(1, 1)},
                             {BERN_KEY: exp_target.view(1, 1)}, t, t2)
            assert float(loss) < 1e-12


def _distillation(tmp_path: Path, method: str = "progressive") -> Distillation:
    return Distillation(str(_teacher(tmp_path / "teacher.ckpt")), method=method,
                        student_steps=1, teacher_steps=4, iterations=1)


def test_the_loss_sees_binary_bernoulli_states_and_the_batchs_image(tmp_path):
    d = _distillation(tmp_path)
    assert isinstance(d.method, WalkProgressive)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(4, 1, 16, 16, generator=gen)
    mask = (torch.rand(4, 1, 16, 16, generator=gen) < 0.3).float()
    state = d.student.distill_state({"image": image, "mask": mask})
    torch.testing.assert_close(state["mask"], 2 * mask - 1)
    seen: list[tuple[str, dict, torch.Tensor]] = []

    def recording(module, role):
        den = module.denoiser(use_ema=False)

        def call(s, t):
            seen.append((role, dict(s), t.clone()))
            return den(s, t)
        call.parametrization = den.parametrization
        return call

    loss = d.method.loss(recording(d.student, "student"), recording(d.teacher, "teacher"), state,
                         gen, 0)
    loss.backward()
    assert [r for r, _, _ in seen] == ["teacher", "teacher", "student"]
    for _, s, _ in seen:
        assert set(s[BERN_KEY].unique().tolist()) <= {0.0, 1.0}
        assert s["image"] is image  # the condition passes through untouched
    t0, t1, ts = (t for _, _, t in seen)
    assert torch.equal(t0, ts) and bool((t1 < t0).all())
    grads = [p.grad for p in d.student.network.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert not any(p.grad is not None for p in d.teacher.parameters())


def test_a_non_binary_mask_is_refused(tmp_path):
    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=N)
    batch = {"image": torch.zeros(1, 1, 8, 8), "mask": torch.full((1, 1, 8, 8), 0.5)}
    with pytest.raises(ValueError, match="batch\\['mask'\\] must hold 0/1"):
        model.distill_state(batch)


@pytest.mark.parametrize("method", ["consistency", "consistency-training", "reflow"])
def test_methods_without_a_walk_are_refused_by_name(tmp_path, method):
    with pytest.raises(ValueError, match=f"--method {method}: EchoDND walks \\['bern'\\].*"
                                         "only --method progressive"):
        _distillation(tmp_path, method)


def test_domaindiff_distill_writes_a_student_that_eval_runs_with_1_and_4_steps(tmp_path,
                                                                               monkeypatch):
    from domaindiff.checkpoint import load_checkpoint
    from domaindiff.cli import main

    monkeypatch.chdir(tmp_path)
    teacher = _teacher(tmp_path / "teacher.ckpt")
    rc = main(["distill", "--ckpt", str(teacher), "--method", "progressive", "--student-steps",
               "1", "--teacher-steps", "4", "--iterations", "2", "--data",
               "domaindiff_medical.SyntheticEcho", "--data.num_train=8", "--data.num_val=2",
               "--data.num_test=2", "--data.size=16", "--data.batch_size=4",
               "--data.generator=simple", "--trainer.enable_progress_bar=false",
               "--trainer.enable_model_summary=false", "--trainer.logger=false",
               f"--trainer.default_root_dir={tmp_path / 'run'}", "--out",
               str(tmp_path / "student.ckpt")])
    assert rc in (0, None)
    raw = torch.load(tmp_path / "student.ckpt", weights_only=True)
    meta = raw["domaindiff"]["distilled"]
    assert meta["method"] == "progressive" and meta["walked"] == [BERN_KEY]
    assert raw["hyper_parameters"]["dual_sampler"] == "distilled"
    assert raw["medical"] == {"image_size": 16}  # eval's default image side, as the teacher's
    student = load_checkpoint(tmp_path / "student.ckpt")
    assert student.default_sampler == "distilled" and student.sampling_steps == 1
    changed = [k for k, v in student.network.state_dict().items()
               if not torch.equal(v, load_checkpoint(teacher).network.state_dict()[k])]
    assert changed
    cfg = OmegaConf.load(Path(evaluate.__file__).parent / "conf" / "eval.yaml")
    for steps in (1, 4):
        out = tmp_path / f"eval{steps}"
        cfg.update(dict(ckpt=str(tmp_path / "student.ckpt"), generator="simple", size=None,
                        steps=steps, num_samples=2, max_images=2, num_overlays=0,
                        out_dir=str(out)))
        summary = evaluate.run(cfg)
        assert summary["nfe_per_image"] == 2 * steps and summary["sampler"] == "distilled"
        saved_samples = torch.load(out / f"samples_distilled_{steps}.pt", weights_only=True)
        assert saved_samples["mask"].shape[-2:] == (16, 16)  # the side the student recorded
        saved = json.loads((out / f"metrics_distilled_{steps}.json").read_text())
        assert 0.0 <= saved["dice"] <= 1.0


def test_an_x0_student_reads_the_gaussian_output_as_x0_and_trains_an_x0_target(tmp_path):
    d = Distillation(str(_teacher(tmp_path / "teacher.ckpt")), method="progressive",
                     student_steps=1, teacher_steps=4, iterations=1,
                     student_parametrization="x0")
    assert d.student.parametrization == "x0" and d.teacher.parametrization == "eps"
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(2, 1, 16, 16, generator=gen),
             "mask": (torch.rand(2, 1, 16, 16, generator=gen) < 0.3).float()}
    state = d.student.distill_state(batch)
    loss = d.method.loss(d.student.denoiser(use_ema=False), d.teacher.denoiser(), state, gen, 0)
    assert torch.isfinite(loss)
    assert torch.isfinite(d.student.loss(d.student.batch_to_state(batch)))


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
def test_the_gaussian_target_is_the_parametrizations_and_its_noise_estimate_exact(kind):
    """The exact prediction of a kind is its target, and converts back to the true noise."""
    from domaindiff.parametrization import from_x0_eps

    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=N, ema_decay=0.0,
                    parametrization=kind)
    gen = torch.Generator().manual_seed(0)
    m = (torch.rand(3, 1, 8, 8, generator=gen) < 0.4).float()
    eps = torch.randn(m.shape, generator=gen)
    i = torch.tensor([1, 7, N])
    abar = model.bern.abar[i].view(-1, 1, 1, 1).float()
    x0 = 2 * m - 1
    xg = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    exact = from_x0_eps(x0, eps, kind, i.float() / N, model.processes["mask"]).float()
    target, eps_hat = model.gaussian_target(exact, xg, x0, eps, abar)
    torch.testing.assert_close(target, exact, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)


def test_a_parametrization_echodnd_cannot_train_is_refused_by_name():
    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=N, ema_decay=0.0,
                    parametrization="score")
    batch = {"image": torch.rand(2, 1, 8, 8), "mask": torch.ones(2, 1, 8, 8)}
    with pytest.raises(ValueError, match="EchoDND trains parametrization 'eps', 'v' or 'x0', "
                                         "got 'score'"):
        model.loss(model.batch_to_state(batch))
