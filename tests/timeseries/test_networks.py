"""The S4D layer and the TSDiff backbone."""

import torch
import torch.nn.functional as F

from domaindiff_timeseries.networks import S4DLayer, TSDiffBackbone


def test_s4d_bidirectional_equals_direct_convolution():
    torch.manual_seed(0)
    h, length = 3, 9
    layer = S4DLayer(h, 8).double()
    x = torch.randn(2, length, h, dtype=torch.float64)
    k = layer.kernel(length)
    u = x.transpose(1, 2)
    y = torch.zeros_like(u)
    for t in range(length):
        for s in range(length):
            if s <= t:
                y[..., t] += k[:h, t - s] * u[..., s]
            if s >= t:
                y[..., t] += k[h:, s - t] * u[..., s]
    y = y + layer.d[:, None] * u
    ref = F.glu(layer.out(F.gelu(y.transpose(1, 2))), -1)
    torch.testing.assert_close(layer(x), ref)


def test_s4d_kernel_matches_zoh_recurrence():
    torch.manual_seed(1)
    layer = S4DLayer(2, 4, bidirectional=False).double()
    k = layer.kernel(5)
    dt = layer.log_dt.exp()[:, None]
    a = torch.complex(-layer.log_a_real.exp(), layer.a_imag).to(torch.complex128)
    c = torch.view_as_complex(layer.c.contiguous())
    ab = torch.exp(dt * a)
    bb = (ab - 1) / a  # ZOH input matrix (B = 1)
    ref = torch.stack([2 * (c * ab**i * bb).sum(-1).real for i in range(5)], -1)
    torch.testing.assert_close(k, ref)


def test_kernel_cached_at_inference_and_refreshed_when_weights_change():
    layer = S4DLayer(4, 8).eval()
    with torch.no_grad():
        k1 = layer.kernel(16)
        assert layer.kernel(16) is k1  # cached
        layer.c.mul_(2.0)  # in-place update (as the EMA does)
        k2 = layer.kernel(16)
    assert k2 is not k1
    torch.testing.assert_close(k2, 2 * k1)
    layer.train()
    assert layer._cache is None


def test_backbone_lag_features_read_window_and_history():
    net = TSDiffBackbone(dim=1, lags=[2, 3], hidden=8, num_blocks=1, emb_dim=8, d_state=4)
    x = torch.arange(10, 15, dtype=torch.float32)[None, :, None]  # window 10..14
    past = torch.arange(7, 10, dtype=torch.float32)[None, :, None]  # history 7, 8, 9
    f = net.features({"x": x, "past": past})
    assert f.shape == (1, 5, 3)
    torch.testing.assert_close(f[0, :, 1], torch.arange(8.0, 13.0))   # lag 2
    torch.testing.assert_close(f[0, :, 2], torch.arange(7.0, 12.0))   # lag 3


def test_backbone_shapes_and_zero_initial_output():
    net = TSDiffBackbone(dim=2, lags=[4], hidden=16, num_blocks=2, emb_dim=16, d_state=8)
    st = {"x": torch.randn(3, 20, 2), "past": torch.randn(3, 4, 2)}
    out = net(st, torch.rand(3))["x"]
    assert out.shape == (3, 20, 2)
    assert out.abs().max() == 0  # zero-initialised head: the untrained model predicts eps = 0
    try:
        net({"x": st["x"], "past": st["past"][:, :2]}, torch.rand(3))
    except ValueError as err:
        assert "past" in str(err)
    else:
        raise AssertionError("short history must raise")
