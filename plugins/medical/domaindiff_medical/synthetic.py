"""Offline echocardiograms: two independently written generators and graded corruptions.

* :func:`camus_like_echo` (the default): an apical 2- or 4-chamber view at end diastole or end
  systole, with the variation real acquisitions show: ventricle shape, size and ES contraction,
  myocardial thickness, probe tilt, depth gain (TGC), Rayleigh speckle of random grain, acoustic
  shadowing and lateral-wall dropout, and sectors that cut the heart off at the side or bottom.
* :func:`shifted_echo`: a second generator written separately, with other appearance statistics
  (Nakagami speckle with log compression, a brighter blood pool with clutter, a wider, shallower
  sector with a curved far field, polygon anatomy) as a domain-shift test set.
* :func:`corrupt`: noise, blur, contrast and gain corruptions at severities 1-5.

Labels use CAMUS's values: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

#: the physical height of the synthetic field of view (mm): spacing = FOV_MM / size
FOV_MM = 160.0
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
CORRUPTIONS = ("noise", "blur", "contrast", "gain")
GENERATORS = ("camus_like", "shifted", "simple")


def _polar(h: int, w: int, apex: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.hypot(yy - apex[0], xx - apex[1]) / h, np.arctan2(xx - apex[1], yy - apex[0])


def _shape(h: int, w: int, cy: float, cx: float, ry: float, rx: float, tilt: float,
           rng: np.random.Generator, rough: float, apex_narrow: float = 0.0) -> np.ndarray:
    """A tilted, bumpy ellipse; ``apex_narrow`` tapers its top (a bullet-shaped ventricle)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    c, s = np.cos(tilt), np.sin(tilt)
    dy, dx = (yy - cy), (xx - cx)
    u, v = c * dy - s * dx, s * dy + c * dx  # u along the long axis (down), v across
    un, vn = u / ry, v / rx
    vn = vn * (1 + apex_narrow * np.clip(-un, 0, 1))  # narrower towards the apex (u < 0)
    theta = np.arctan2(un, vn)
    bump = np.ones_like(theta)
    for k in range(2, 6):
        bump += rough * rng.normal() / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(un, vn) <= bump


def _normalise(img: np.ndarray, sector: np.ndarray) -> np.ndarray:
    img = np.where(sector, img, 0.0)
    top = np.quantile(img[sector], 0.99) if sector.any() else 1.0
    return np.clip(img / max(top, 1e-6), 0, 1).astype(np.float32)


def camus_like_echo(seed: int, size: int = 64, view: str = "4CH",
                    phase: str = "ED") -> tuple[np.ndarray, np.ndarray]:
    """One apical echocardiogram in the CAMUS layout and its label map.

    Args:
        seed: random seed (same seed, view and phase: same image).
        size: image side (>= 32).
        view: ``"2CH"`` or ``"4CH"`` (the 4-chamber view adds the right heart beside the LV).
        phase: ``"ED"`` or ``"ES"`` (systole: smaller cavity, thicker wall).

    Returns:
        ``(image float32 (size, size) in [0, 1], label uint8 (size, size))``.
    """
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    if view not in VIEWS or phase not in PHASES:
        raise ValueError(f"view must be one of {VIEWS} and phase one of {PHASES}; got {view!r}, "
                         f"{phase!r}")
    rng = np.random.default_rng([seed, VIEWS.index(view), PHASES.index(phase)])
    anat = np.random.default_rng(seed)  # the same heart in every view and phase
    h = w = size
    apex = (-0.04 * h + rng.normal(0, 0.02) * h, w / 2 + rng.normal(0, 0.03) * w)
    depth, angle = _polar(h, w, apex)
    half = np.deg2rad(rng.uniform(30, 42))
    offset = np.deg2rad(rng.normal(0, 4))
    max_depth = rng.uniform(0.85, 1.02)  # < 0.9: the far field (atrium) is cut off
    sector = (np.abs(angle - offset) <= half) & (depth <= max_depth)
    tilt = anat.normal(0, 0.12) + rng.normal(0, 0.05)  # probe tilt
    contraction = rng.uniform(0.72, 0.85) if phase == "ES" else 1.0
    cy = h * anat.uniform(0.38, 0.48)
    cx = w * (anat.uniform(0.44, 0.56) + (0.05 if view == "4CH" else 0.0))
    ry = h * anat.uniform(0.18, 0.27) * (0.5 + 0.5 * contraction)
    rx = w * anat.uniform(0.08, 0.14) * contraction
    wall = anat.uniform(0.05, 0.10) * w * (1.35 - 0.35 * contraction)  # thicker in systole
    rough = anat.uniform(0.03, 0.09)
    narrow = anat.uniform(0.0, 0.4)
    cavity = _shape(h, w, cy, cx, ry, rx, tilt, rng, rough, narrow)
    outer = _shape(h, w, cy - 0.3 * wall, cx, ry + wall, rx + wall, tilt, rng, rough * 0.6,
                   narrow * 0.6)
    myo = outer & ~cavity
    la_cy = cy + np.cos(tilt) * ry * 1.55
    la_cx = cx + np.sin(tilt) * ry * 1.55
    atrium = _shape(h, w, la_cy, la_cx, ry * anat.uniform(0.4, 0.55), rx * 1.05, tilt, rng,
                    0.05) & ~outer
    label = np.zeros((h, w), np.uint8)
    label[atrium] = 3
    label[myo] = 2
    label[cavity] = 1
    rv = np.zeros((h, w), bool)
    if view == "4CH":  # right ventricle and atrium to the image's left (no label)
        rv = _shape(h, w, cy + 0.05 * h, cx - rx - wall - 0.09 * w, ry * 0.8, rx * 0.8, tilt,
                    rng, 0.08) & ~outer
        rv |= _shape(h, w, la_cy, la_cx - rx * 2.2, ry * 0.4, rx * 0.9, tilt, rng, 0.05) \
            & ~outer & ~atrium
    label[~sector] = 0
    # reflectivity: bright myocardium and pericardium, dark blood, textured tissue
    tissue = ndimage.gaussian_filter(rng.normal(size=(h, w)), 2.5)
    refl = rng.uniform(0.3, 0.55) * (1 + 0.5 * tissue)
    septum_gain = rng.uniform(0.75, 1.0)
    refl[myo] = rng.uniform(0.7, 1.0) * septum_gain
    blood = rng.uniform(0.03, 0.14)
    refl[cavity | atrium | rv] = blood
    # speckle: Rayleigh amplitude of a correlated complex field (grain size varies)
    grain = rng.uniform(0.6, 1.4) * size / 64
    re = ndimage.gaussian_filter(rng.normal(size=(h, w)), grain)
    im = ndimage.gaussian_filter(rng.normal(size=(h, w)), grain)
    speckle = np.hypot(re, im)
    speckle /= max(speckle.mean(), 1e-9)
    # depth gain: attenuation and a time-gain compensation curve with a random knee
    atten = np.exp(-rng.uniform(0.6, 1.8) * depth)
    tgc = 1 + rng.uniform(-0.3, 0.5) * np.clip((depth - rng.uniform(0.3, 0.6)) * 3, 0, 1)
    img = refl * speckle * atten * tgc
    # acoustic shadow (a rib) and lateral-wall dropout (a beam parallel to the wall)
    if rng.random() < 0.5:
        a0 = offset + rng.uniform(-half, half)
        width = np.deg2rad(rng.uniform(3, 9))
        start = rng.uniform(0.1, 0.5)
        shade = (np.abs(angle - a0) < width) & (depth > start)
        img = np.where(shade, img * rng.uniform(0.1, 0.4), img)
    if rng.random() < 0.6:
        side = -1 if view == "4CH" else rng.choice([-1, 1])
        a0 = np.arctan2(cx + side * (rx + 0.5 * wall) - apex[1], cy - apex[0])
        drop = np.exp(-((angle - a0) / np.deg2rad(rng.uniform(3, 7))) ** 2)
        img = img * (1 - rng.uniform(0.5, 0.9) * drop * myo)
    img = img + rng.uniform(0.0, 0.04) * rng.rayleigh(size=(h, w))  # electronic noise
    return _normalise(img, sector), label


def _polygon(cy: float, cx: float, ry: float, rx: float, tilt: float, rng: np.random.Generator,
             n: int = 14, jitter: float = 0.08) -> list[tuple[float, float]]:
    ts = np.sort(rng.uniform(0, 2 * np.pi, n)) if jitter else np.linspace(0, 2 * np.pi, n,
                                                                           endpoint=False)
    r = 1 + jitter * rng.normal(size=n)
    r = np.convolve(np.r_[r[-1], r, r[0]], np.ones(3) / 3, "valid")  # smooth the outline
    u, v = ry * r * np.cos(ts), rx * r * np.sin(ts)
    c, s = np.cos(tilt), np.sin(tilt)
    ys, xs = cy + c * u - s * v, cx + s * u + c * v
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _fill(h: int, w: int, poly: list[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def shifted_echo(seed: int, size: int = 64, view: str = "4CH",
                 phase: str = "ED") -> tuple[np.ndarray, np.ndarray]:
    """An echocardiogram from a second, separately written generator (domain shift).

    Differs from :func:`camus_like_echo` in how everything is drawn: polygon anatomy, a wider
    and shallower sector whose far field is an arc about a virtual apex above the image,
    Nakagami-distributed speckle (shape ``m`` in 0.4-1.5) with log compression, a brighter,
    cluttered blood pool, a uniform gain with a vignette instead of depth attenuation.

    Returns:
        ``(image float32 (size, size) in [0, 1], label uint8 (size, size))`` in CAMUS values.
    """
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    if view not in VIEWS or phase not in PHASES:
        raise ValueError(f"view must be one of {VIEWS} and phase one of {PHASES}; got {view!r}, "
                         f"{phase!r}")
    rng = np.random.default_rng([10_007, seed, VIEWS.index(view), PHASES.index(phase)])
    h = w = size
    apex = (-0.25 * h, w / 2)
    depth, angle = _polar(h, w, apex)
    half = np.deg2rad(rng.uniform(40, 50))
    sector = (np.abs(angle) <= half) & (depth >= 0.3) & (depth <= rng.uniform(1.05, 1.2))
    es = phase == "ES"
    tilt = rng.normal(0, 0.2)
    cy, cx = h * rng.uniform(0.35, 0.5), w * rng.uniform(0.42, 0.58)
    ry = h * rng.uniform(0.17, 0.25) * (0.85 if es else 1.0)
    rx = w * rng.uniform(0.09, 0.15) * (0.75 if es else 1.0)
    wall = w * rng.uniform(0.04, 0.09) * (1.3 if es else 1.0)
    cavity = _fill(h, w, _polygon(cy, cx, ry, rx, tilt, rng))
    outer = _fill(h, w, _polygon(cy - 0.2 * wall, cx, ry + wall, rx + wall, tilt, rng,
                                 jitter=0.04))
    myo = outer & ~cavity
    atrium = _fill(h, w, _polygon(cy + np.cos(tilt) * ry * 1.6, cx + np.sin(tilt) * ry * 1.6,
                                  ry * 0.5, rx, tilt, rng)) & ~outer
    label = np.zeros((h, w), np.uint8)
    label[atrium] = 3
    label[myo] = 2
    label[cavity] = 1
    if view == "4CH":
        rv = _fill(h, w, _polygon(cy, cx - rx - wall - 0.1 * w, ry * 0.85, rx * 0.7, tilt,
                                  rng)) & ~outer
    else:
        rv = np.zeros((h, w), bool)
    label[~sector] = 0
    refl = np.full((h, w), rng.uniform(0.45, 0.7))
    refl[myo] = rng.uniform(0.85, 1.0)
    refl[cavity | atrium | rv] = rng.uniform(0.15, 0.3)  # brighter blood pool (clutter)
    m = rng.uniform(0.4, 1.5)  # Nakagami shape: < 1 pre-Rayleigh, > 1 post-Rayleigh
    intensity = rng.gamma(m, 1.0 / m, size=(h, w))  # squared Nakagami amplitude, mean 1
    clutter = ndimage.uniform_filter(rng.random((h, w)), 5) * (cavity | atrium)
    img = refl * np.sqrt(intensity) + 0.3 * clutter
    vignette = 1 - 0.4 * (angle / half) ** 2
    img = np.log1p(rng.uniform(5, 30) * img * vignette)  # log compression
    return _normalise(img, sector), label


def corrupt(image: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """A corrupted copy of an image in [0, 1] (ImageNet-C style graded severity 1-5).

    ``noise``: additive Gaussian (sigma 0.04 ... 0.2); ``blur``: Gaussian blur (sigma 0.5 ... 2.5 px
    at 64 px, scaled with the side); ``contrast``: contrast towards the mean (factor 0.75 ...
    0.15); ``gain``: overall gain (x 1.3 ... 2.5, clipped, saturating the myocardium).
    Severity 0 returns the image unchanged. Pixels outside the sector (exactly 0) stay 0 except
    for noise, which a real receiver adds everywhere.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption: unknown kind {kind!r}; expected one of {list(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise ValueError(f"severity: expected an integer 0-5, got {severity!r}")
    img = np.asarray(image, np.float32)
    if severity == 0:
        return img.copy()
    k = severity - 1
    inside = img > 0
    if kind == "noise":
        rng = np.random.default_rng([seed, 77])
        out = img + (0.04, 0.08, 0.12, 0.16, 0.2)[k] * rng.normal(size=img.shape)
    elif kind == "blur":
        out = ndimage.gaussian_filter(img, (0.5, 1.0, 1.5, 2.0, 2.5)[k] * img.shape[-1] / 64)
        out = np.where(inside, out, 0)
    elif kind == "contrast":
        c = (0.75, 0.55, 0.4, 0.25, 0.15)[k]
        mean = img[inside].mean() if inside.any() else 0.0
        out = np.where(inside, (img - mean) * c + mean, 0)
    else:
        out = img * (1.3, 1.6, 1.9, 2.2, 2.5)[k]
    return np.clip(out, 0, 1).astype(np.float32)
