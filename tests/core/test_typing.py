"""The core's interfaces are typed and uniform (mypy itself runs in ``make lint``)."""

import inspect
import typing

import pytest
import torch

from domaindiff import guidance, likelihood, losses, parametrization, processes, spaces
from domaindiff.guidance import Guidance
from domaindiff.samplers import SAMPLERS, get_sampler, sample_bernoulli
from domaindiff.samplers import base as sampler_base

COMMON = ("guidance", "callback", "generator", "progress", "info")
TYPED_MODULES = [guidance, likelihood, losses, parametrization, processes, spaces, sampler_base]


def _unannotated(fn):
    """Names of the parameters (and ``return``) of ``fn`` without an annotation."""
    sig = inspect.signature(fn)
    missing = [n for n, p in sig.parameters.items()
               if p.annotation is inspect.Parameter.empty and n not in ("self", "cls")
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


@pytest.mark.parametrize("name", [*sorted(SAMPLERS), "bernoulli"])
def test_every_sampler_is_fully_annotated_and_takes_the_common_keywords(name):
    fn = sample_bernoulli if name == "bernoulli" else SAMPLERS[name]
    assert _unannotated(fn) == [], name
    hints = typing.get_type_hints(fn)  # every annotation resolves (no stale or misspelt names)
    params = inspect.signature(fn).parameters
    assert list(params)[:4] == ["denoiser", "process", "shape_or_x_T" if name != "bernoulli"
                                else "shape_or_template", "steps"], name
    for kw in COMMON:
        assert kw in params and params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)
        assert params[kw].default in (None, False), (name, kw)
    assert hints["info"] == dict[str, typing.Any] | None


def test_aliases_keep_the_signature_of_their_sampler():
    alias = get_sampler("dpm_solver2")
    assert inspect.signature(alias) == inspect.signature(SAMPLERS["dpm_solver"])
    assert alias.__name__ == "sample_dpm_solver2"


@pytest.mark.parametrize("module", TYPED_MODULES, ids=lambda m: m.__name__)
def test_public_functions_and_methods_are_annotated(module):
    missing = {}
    for obj_name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__ or obj_name.startswith("_"):
            continue
        members = [(obj_name, obj)] if inspect.isfunction(obj) else [
            (f"{obj_name}.{n}", m) for n, m in vars(obj).items()
            if inspect.isfunction(m) and (not n.startswith("_") or n == "__init__")
            and m.__qualname__.startswith(f"{obj.__qualname__}.")  # not typing's generated ones
        ] if inspect.isclass(obj) else []
        for qual, fn in members:
            if _unannotated(fn):
                missing[qual] = _unannotated(fn)
    assert missing == {}


def test_guidance_protocol_defaults_change_nothing():
    class Nothing(Guidance):
        pass

    model = sampler_base.Model(lambda s, t: {"x": 0.3 * s["x"]}, {"x": processes.VP()})
    x, t = {"x": torch.randn(2, 3)}, torch.full((2,), 0.5)
    g = Nothing()
    assert isinstance(g, Guidance)
    for a, b in zip(g.predict(model, x, t), model.raw_predict(x, t)):
        torch.testing.assert_close(a["x"], b["x"])
    assert g.after_step(x, t, t, model.procs, None) is x
    assert not isinstance(object(), Guidance)
