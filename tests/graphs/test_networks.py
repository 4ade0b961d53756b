"""Score networks: permutation equivariance, masking, symmetry, padding invariance."""

import pytest
import torch

from domaindiff_graphs.networks import GDSSNetwork


def _state(b=2, n=7, f=5, real=(7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, n)
    for i, k in enumerate(real):
        mask[i, :k] = 1
    x = torch.randn(b, n, f, generator=g) * mask[..., None]
    a = torch.randn(b, n, n, generator=g).triu(1)
    a = (a + a.transpose(1, 2)) * mask[:, :, None] * mask[:, None, :]
    return {"x": x, "adj": a, "mask": mask}


@pytest.mark.parametrize("x_net,time_cond", [("gcn", False), ("gmh", False), ("gcn", True)])
def test_equivariance_masking_symmetry(x_net, time_cond):
    torch.manual_seed(0)
    net = GDSSNetwork(5, x_net=x_net, depth=2, nhid=8, num_layers=3, adim=8, num_heads=2,
                      time_cond=time_cond).double()
    st = {k: v.double() for k, v in _state().items()}
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    out = net(st, t)
    assert torch.allclose(out["adj"], out["adj"].transpose(1, 2))
    assert (out["adj"].diagonal(dim1=1, dim2=2) == 0).all()
    assert (out["x"][1, 5:] == 0).all() and (out["adj"][1, 5:] == 0).all()
    perm = torch.randperm(7)
    pst = {"x": st["x"][:, perm], "adj": st["adj"][:, perm][:, :, perm],
           "mask": st["mask"][:, perm]}
    pout = net(pst, t)
    assert torch.allclose(pout["x"], out["x"][:, perm], atol=1e-10)
    assert torch.allclose(pout["adj"], out["adj"][:, perm][:, :, perm], atol=1e-10)


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    net = GDSSNetwork(5, depth=2, nhid=8, num_layers=2, adim=8, num_heads=2).double()
    st = {k: v.double() for k, v in _state(b=1, n=5, real=(5,)).items()}
    pad = {"x": torch.nn.functional.pad(st["x"], (0, 0, 0, 3)),
           "adj": torch.nn.functional.pad(st["adj"], (0, 3, 0, 3)),
           "mask": torch.nn.functional.pad(st["mask"], (0, 3))}
    t = torch.tensor([0.5], dtype=torch.float64)
    a, b = net(st, t), net(pad, t)
    assert torch.allclose(a["x"], b["x"][:, :5], atol=1e-10)
    assert torch.allclose(a["adj"], b["adj"][:, :5, :5], atol=1e-10)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="x_net"):
        GDSSNetwork(5, x_net="transformer")
    with pytest.raises(ValueError, match="divisible"):
        GDSSNetwork(5, adim=10, num_heads=4)
