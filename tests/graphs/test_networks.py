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


def _direct(net):
    """The same networks with the packed fast path switched off (the direct form)."""
    for sub in (net.net_x, net.net_adj):
        if hasattr(sub, "fast"):
            sub.fast = False
    return net


@pytest.mark.parametrize("x_net,conv", [("gcn", "GCN"), ("gmh", "GCN"), ("gmh", "MLP")])
def test_packed_fast_path_equals_the_direct_form(x_net, conv):
    torch.manual_seed(1)
    net = GDSSNetwork(5, x_net=x_net, depth=2, nhid=8, num_layers=3, adim=8, num_heads=2,
                      c_hid=4, c_final=3, c_init=3, conv=conv).double()
    st = {k: v.double() for k, v in _state(b=3, n=9, real=(9, 6, 4), seed=2).items()}
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    with torch.no_grad():
        fast = net(st, t)
        direct = _direct(net)(st, t)
    for k in ("x", "adj"):
        torch.testing.assert_close(fast[k], direct[k], rtol=1e-12, atol=1e-12)
    assert (fast["adj"] != 0).any() and (fast["adj"][1, 6:] == 0).all()
    assert torch.equal(fast["adj"], fast["adj"].transpose(1, 2))


def test_non_symmetric_input_takes_the_direct_form():
    torch.manual_seed(3)
    net = GDSSNetwork(5, depth=2, nhid=8, num_layers=2, adim=8, num_heads=2).double()
    st = {k: v.double() for k, v in _state(b=2, n=6, real=(6, 6), seed=4).items()}
    st["adj"] = st["adj"] + 0.1 * torch.randn(2, 6, 6, dtype=torch.float64)  # not symmetric
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    with torch.no_grad():
        fast = net(st, t)
        direct = _direct(net)(st, t)
    assert torch.equal(fast["adj"], direct["adj"]) and torch.equal(fast["x"], direct["x"])
    assert not torch.equal(fast["adj"], fast["adj"].transpose(1, 2))  # the packed form would be
