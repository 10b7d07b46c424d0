import math

import pytest
import torch
import torch.nn as nn

from sdekit import UserError
from sdekit.tasks.metrics import fid, kid, l2, l2_downsampled, mean_ci
from sdekit.models.nets.features import load_features
from sdekit.tasks.judge import split_digits


class Flat(nn.Module):
    """Identity features: KID then has a closed form we can compute by hand."""

    num_features = 4

    def forward(self, u):
        return u.flatten(1).double()


def _mmd_unbiased(x, y, d):
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_l2_scales():
    u = torch.zeros(2, 1, 4, 4)
    v = torch.zeros(2, 1, 4, 4)
    v[0] = 1.0                                        # every pixel off by 1: sqrt(16) = 4
    v[1, 0, 0, 0] = 1.0                               # one pixel off by 1
    assert torch.allclose(l2(u, v), torch.tensor([4.0, 1.0], dtype=torch.float64))
    # 2x2 pooling: the full image stays 1 per pooled pixel (sqrt 4 = 2); one pixel becomes 1/4
    assert torch.allclose(l2_downsampled(u, v, 2), torch.tensor([2.0, 0.25], dtype=torch.float64))
    with pytest.raises(UserError):
        l2(u, v[:1])
    with pytest.raises(UserError):
        l2_downsampled(u, v, 3)


def test_mean_ci():
    m, h = mean_ci(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and math.isclose(h, 1.96 * math.sqrt(5 / 3) / 2)


def test_kid_equals_the_unbiased_mmd_with_identity_features():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 2, 2, generator=g)
    y = torch.rand(30, 1, 2, 2, generator=g) * 0.5
    r = kid(x, y, feature=Flat(), subsets=3, subset_size=30)
    assert math.isclose(r.mean, _mmd_unbiased(x.flatten(1).double(), y.flatten(1).double(), 4), rel_tol=1e-4)
    assert r.std < 1e-6                              # every subset is the whole set
    with pytest.raises(UserError):
        kid(x, y, feature=Flat(), subset_size=31)


def test_shipped_features_separate_real_from_strokes_and_noise():
    from sdekit.tasks.sdedit import simulate_strokes
    net = load_features()
    tr, tr_y, te, te_y = split_digits()
    assert float((net.logits(te).argmax(1) == te_y).float().mean()) > 0.95
    real = kid(te, tr[:360], feature=net, subsets=20)
    strokes = kid(te, simulate_strokes(tr[:360]), feature=net, subsets=20)
    noise = kid(te, torch.rand(360, 1, 16, 16, generator=torch.Generator().manual_seed(0)), feature=net, subsets=20)
    assert abs(real.mean) < 3 * real.std + 0.01
    assert real.mean + 0.05 < strokes.mean < noise.mean
    f_real, f_noise = fid(te, tr[:360], net), fid(te, torch.rand(360, 1, 16, 16), net)
    assert f_real is not None and f_real < f_noise
    assert fid(te[:100], tr[:100], net) is None       # 100 <= 2 x 64 features: too few


def test_features_refuse_wrong_channels():
    with pytest.raises(UserError):
        load_features()(torch.rand(2, 3, 16, 16))
