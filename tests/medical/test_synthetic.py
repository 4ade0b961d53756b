"""The two offline generators and the graded corruptions."""

import numpy as np
import pytest

from domaindiff_medical.data import SyntheticEcho
from domaindiff_medical.synthetic import camus_like_echo, corrupt, shifted_echo


@pytest.mark.parametrize("fn", [camus_like_echo, shifted_echo])
def test_generators_are_deterministic_with_camus_labels_and_a_black_outside(fn):
    a, la = fn(5, 64, "4CH", "ED")
    b, lb = fn(5, 64, "4CH", "ED")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert set(np.unique(la)) <= {0, 1, 2, 3} and {1, 2} <= set(np.unique(la))
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert a[0, 0] == 0 and a[0, -1] == 0  # outside the sector: no echo
    assert a[la == 1].mean() < a[la == 2].mean()  # blood darker than myocardium
    assert not np.array_equal(a, fn(6, 64, "4CH", "ED")[0])
    with pytest.raises(ValueError, match="view"):
        fn(0, 64, "3CH", "ED")


def test_systole_shrinks_the_cavity_of_the_same_heart():
    ed = [(camus_like_echo(k, 64, "2CH", "ED")[1] == 1).sum() for k in range(8)]
    es = [(camus_like_echo(k, 64, "2CH", "ES")[1] == 1).sum() for k in range(8)]
    assert all(s < d for s, d in zip(es, ed, strict=True))


def test_the_shifted_generator_has_other_appearance_statistics():
    a = np.stack([camus_like_echo(k, 64)[0] for k in range(6)])
    b = np.stack([shifted_echo(k, 64)[0] for k in range(6)])
    la = np.stack([camus_like_echo(k, 64)[1] for k in range(6)])
    lb = np.stack([shifted_echo(k, 64)[1] for k in range(6)])
    assert b[lb == 1].mean() > 2 * a[la == 1].mean()  # brighter, cluttered blood pool
    assert b[b > 0].mean() > a[a > 0].mean() + 0.15  # log-compressed, brighter overall


@pytest.mark.parametrize("kind", ["noise", "blur", "contrast", "gain"])
def test_corruptions_grow_with_severity(kind):
    img = camus_like_echo(1, 64)[0]
    dist = [np.abs(corrupt(img, kind, s, seed=0) - img).mean() for s in range(6)]
    assert dist[0] == 0 and all(x < y for x, y in zip(dist[1:], dist[2:], strict=False))
    with pytest.raises(ValueError, match="severity"):
        corrupt(img, kind, 6)
    with pytest.raises(ValueError, match="corruption"):
        corrupt(img, "fog", 1)


def test_datamodule_cycles_views_and_phases_and_gives_mm_spacing():
    dm = SyntheticEcho(num_train=4, num_val=1, num_test=1, size=32, seed=0)
    ds = dm.dataset("train")
    want = [camus_like_echo(0, 32, v, p)[0] for v, p in
            (("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES"))]
    assert all(np.array_equal(ds.images[k, 0].numpy(), w) for k, w in enumerate(want))
    assert ds.unit == "mm" and ds.spacing[0].tolist() == [5.0, 5.0]  # 160 mm / 32 px
    with pytest.raises(ValueError, match="generator"):
        SyntheticEcho(generator="cartoon")
    with pytest.raises(ValueError, match="give both"):
        SyntheticEcho(corruption="noise")
