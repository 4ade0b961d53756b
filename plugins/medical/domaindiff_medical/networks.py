"""Echo-DND networks: a multi-scale fusion conditioning encoder and two U-Net branches.

The Gaussian branch predicts the noise of a Gaussian-noised mask, the Bernoulli branch predicts
the clean-mask probability from a Bernoulli-noised mask; both share one timestep embedding and
receive the encoder's multi-resolution image features after the first block of each level. The
encoder also outputs the spatial coherence calibration map (a per-pixel LV probability, trained
against the mask) that enters both branches as an extra input channel.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from domaindiff.nn import sinusoidal_embedding


def _groups(c: int) -> int:
    return 8 if c % 8 == 0 else 1


class ResBlock(nn.Module):
    """Residual block with an additive timestep projection (optional)."""

    def __init__(self, cin: int, cout: int, temb: int = 0) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout) if temb else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        if self.t is not None and emb is not None:
            h = h + self.t(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class MultiScaleFusionEncoder(nn.Module):
    """HRNet-style image encoder: parallel resolutions exchanging features, plus a calibration map.

    Args:
        channels: feature channels per resolution (full, 1/2, 1/4, ...).
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.channels = channels
        self.stem = nn.Conv2d(1, channels[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(channels[k - 1], channels[k], 3, stride=2, padding=1)
                                  for k in range(1, len(channels)))
        self.blocks = nn.ModuleList(ResBlock(c, c) for c in channels)
        # fusion: every resolution receives every other one, resampled and projected
        self.proj = nn.ModuleList(nn.ModuleList(nn.Conv2d(channels[s], channels[d], 1)
                                                for s in range(len(channels)))
                                  for d in range(len(channels)))
        self.fused = nn.ModuleList(ResBlock(c, c) for c in channels)
        self.calib = nn.Conv2d(sum(channels), 1, 1)

    def forward(self, image: Tensor) -> tuple[list[Tensor], Tensor]:
        """Features at each resolution and the calibration map (probabilities, (B, 1, H, W))."""
        feats = [self.stem(image)]
        for d in self.down:
            feats.append(d(F.silu(feats[-1])))
        feats = [b(f) for b, f in zip(self.blocks, feats, strict=True)]
        out = []
        for d, fd in enumerate(feats):
            acc = fd
            for s, fs in enumerate(feats):
                if s != d:
                    acc = acc + self.proj[d][s](F.interpolate(fs, size=fd.shape[-2:],
                                                              mode="bilinear", align_corners=False))
            out.append(self.fused[d](acc))
        full = torch.cat([F.interpolate(f, size=image.shape[-2:], mode="bilinear",
                                        align_corners=False) for f in out], 1)
        return out, torch.sigmoid(self.calib(full))


class DualOutput(NamedTuple):
    """What :class:`EchoDNDNet` returns.

    Attributes:
        eps: predicted Gaussian noise ``(B, 1, H, W)``.
        prob: Bernoulli branch's clean-mask probability ``P(x0 = 1 | x_t)`` in [0, 1].
        calib: spatial coherence calibration map (LV probability) in [0, 1].
        var: learned-variance interpolation ``v`` in [-1, 1] (``None`` without ``learn_sigma``):
            ``log var = (v + 1)/2 log beta + (1 - v)/2 log beta_tilde``.
        logit: the logit of ``prob`` (for a numerically stable BCE).
    """

    eps: Tensor
    prob: Tensor
    calib: Tensor
    var: Tensor | None
    logit: Tensor


class Branch(nn.Module):
    """U-Net over a noisy mask with fused image features; the calibration map enters as input."""

    def __init__(self, channels: list[int], temb: int, out_channels: int = 1) -> None:
        super().__init__()
        self.inp = nn.Conv2d(2, channels[0], 3, padding=1)  # noisy mask + calibration map
        self.enc = nn.ModuleList(ResBlock(c, c, temb) for c in channels)
        self.fuse = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels)
        self.enc2 = nn.ModuleList(ResBlock(c, c, temb) for c in channels)
        self.down = nn.ModuleList(nn.Conv2d(channels[k], channels[k + 1], 3, stride=2, padding=1)
                                  for k in range(len(channels) - 1))
        self.mid = ResBlock(channels[-1], channels[-1], temb)
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[k + 1], channels[k], 2, stride=2)
                                for k in range(len(channels) - 1))
        self.dec = nn.ModuleList(ResBlock(2 * c, c, temb) for c in channels[:-1])
        self.out = nn.Sequential(nn.GroupNorm(_groups(channels[0]), channels[0]), nn.SiLU(),
                                 nn.Conv2d(channels[0], out_channels, 3, padding=1))

    def forward(self, x: Tensor, emb: Tensor, feats: list[Tensor], calib: Tensor) -> Tensor:
        h = self.inp(torch.cat([x, calib], 1))
        skips = []
        for k, (b1, f, b2) in enumerate(zip(self.enc, self.fuse, self.enc2, strict=True)):
            h = b1(h, emb) + f(feats[k])  # image features enter after the first block
            h = b2(h, emb)
            if k < len(self.down):
                skips.append(h)
                h = self.down[k](h)
        h = self.mid(h, emb)
        for k in reversed(range(len(self.up))):
            h = self.up[k](h)
            h = self.dec[k](torch.cat([h, skips[k]], 1), emb)
        return self.out(h)


class EchoDNDNet(nn.Module):
    """The dual-noise denoiser ``net(image, x_gauss, x_bern, t) -> DualOutput``.

    Args:
        base_channels: channels at full resolution (doubled per level).
        levels: number of resolutions (input side must be divisible by ``2**(levels-1)``).
        temb_dim: timestep embedding width (shared by both branches).
        learn_sigma: the Gaussian branch also outputs the variance interpolation ``v``
            (improved-DDPM style, as MedSegDiff and Echo-DND do).
    """

    def __init__(self, base_channels: int = 16, levels: int = 3, temb_dim: int = 64,
                 learn_sigma: bool = False) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        channels = [base_channels * 2 ** k for k in range(levels)]
        self.levels, self.temb_dim, self.learn_sigma = levels, temb_dim, learn_sigma
        self.temb = nn.Sequential(nn.Linear(temb_dim, 4 * temb_dim), nn.SiLU(),
                                  nn.Linear(4 * temb_dim, 4 * temb_dim))
        self.encoder = MultiScaleFusionEncoder(channels)
        self.gauss = Branch(channels, 4 * temb_dim, 2 if learn_sigma else 1)
        self.bern = Branch(channels, 4 * temb_dim)

    def forward(self, image: Tensor, x_gauss: Tensor, x_bern: Tensor, t: Tensor) -> DualOutput:
        """Gaussian noise (and variance), Bernoulli clean-mask probability, calibration map.

        The Bernoulli branch's output is a probability (its logit through a sigmoid).

        Args:
            image: ``(B, 1, H, W)`` conditioning image.
            x_gauss: Gaussian-noised mask in [-1, 1] scale.
            x_bern: Bernoulli-noised 0/1 mask.
            t: ``(B,)`` times ``i / N`` in [0, 1].
        """
        side = 2 ** (self.levels - 1)
        if image.shape[-1] % side or image.shape[-2] % side:
            raise ValueError(f"image side {tuple(image.shape[-2:])} must be divisible by {side}")
        emb = self.temb(sinusoidal_embedding(t, self.temb_dim, scale=1000.0))  # t as DDPM steps
        feats, calib = self.encoder(image)
        g = self.gauss(x_gauss, emb, feats, calib)
        eps, var = (g[:, :1], torch.tanh(g[:, 1:])) if self.learn_sigma else (g, None)
        logit = self.bern(x_bern, emb, feats, calib)
        return DualOutput(eps, torch.sigmoid(logit), calib, var, logit)


class UNetBaseline(nn.Module):
    """Plain U-Net segmenter (image -> LV probability) for the baseline comparison."""

    def __init__(self, base_channels: int = 16, levels: int = 3) -> None:
        super().__init__()
        channels = [base_channels * 2 ** k for k in range(levels)]
        self.net = Branch(channels, 0)

    def logits(self, image: Tensor) -> Tensor:
        """LV logit ``(B, 1, H, W)`` (the branch sees the image itself, no fused features)."""
        b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
        feats = [torch.zeros(b, m.in_channels, h // 2 ** k, w // 2 ** k, device=image.device)
                 for k, m in enumerate(self.net.fuse)]
        return self.net(image, torch.zeros(b, 0, device=image.device), feats,
                        torch.zeros_like(image))

    def forward(self, image: Tensor) -> Tensor:
        """LV probability ``(B, 1, H, W)``."""
        return torch.sigmoid(self.logits(image))
