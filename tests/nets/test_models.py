import math

import pytest
import torch
from torch import nn

from redrep.core.validation import RedrepError
from redrep.nets.models import MODELS, DenseNet, WideResNet, create_model, resolve_model_options, scaled_channels

WRN = ["wide_resnet16", "wide_resnet22", "wide_resnet28", "wide_resnet40"]


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("name", WRN)
@pytest.mark.parametrize("k", [0.25, 0.5, 1, 1.5])
def test_wide_resnet_widths_and_depth(name, k):
    depth = int(name.removeprefix("wide_resnet"))
    m = create_model(name, 10, (3, 32, 32), widening_factor=k)
    assert m.num_features == round(64 * k) == m.get_classifier().in_features
    assert m.widths == [round(16 * k), round(32 * k), round(64 * k)]
    # (d - 4) / 6 blocks per group, two 3x3 convs each, plus the stem: d - 2 weighted 3x3 layers + readout etc.
    n_blocks = sum(type(b).__name__ == "_PreActBlock" for b in m.modules())
    assert n_blocks == 3 * (depth - 4) // 6
    n_conv3 = sum(isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3) for c in m.modules())
    assert n_conv3 == depth - 3  # stem + 2 per block; with the readout and 1x1 shortcuts the usual count is d
    x = torch.randn(3, 3, 32, 32)
    m.eval()
    f = m.forward_features(x)
    assert f.shape == (3, m.num_features)
    assert torch.allclose(m(x), m.forward_head(f), atol=1e-6)
    assert torch.equal(m.forward_head(f, pre_logits=True), f)


@pytest.mark.parametrize("k, params", [(10, 36_479_194), (8, 23_354_842)])
def test_wide_resnet28_parameter_count_matches_the_known_network(k, params):
    # WRN-28-10 on CIFAR-10 has 36.5M parameters (Zagoruyko & Komodakis); the count is independent of the ReLU
    m = WideResNet(28, k, 10)
    assert sum(p.numel() for p in m.parameters()) == params


def test_channel_rounding_reaches_the_paper_widths():
    assert [scaled_channels(64, k) for k in (0.25, 0.5, 1, 2, 4, 8, 16)] == [16, 32, 64, 128, 256, 512, 1024]
    assert scaled_channels(16, 0.25) == 4 and scaled_channels(16, 0.01) == 1
    assert scaled_channels(16, 0.15625) == 3  # 2.5 rounds up, not to even


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_resnet_initialisation(seed):
    torch.manual_seed(seed)
    m = WideResNet(16, 4, 10)
    bn = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    w = torch.cat([b.weight.detach() for b in bn])
    assert w.min() >= 0 and w.max() <= 1 and 0.4 < w.mean() < 0.6  # uniform(0, 1), not the default 1
    assert all(torch.count_nonzero(b.bias) == 0 for b in bn)
    conv = m.group2[1].conv1.weight.detach()  # 256 -> 256, 3x3: kaiming normal, fan_in, gain sqrt(2)
    fan_in = conv.shape[1] * 9
    assert conv.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    fc = m.get_classifier()
    assert torch.count_nonzero(fc.bias) == 0
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / fc.in_features), rel=0.15)


@pytest.mark.parametrize("arch, k", [("wide_resnet16", 1), ("densenet40", 1)])
def test_no_relu_before_the_pool(arch, k):
    # the published networks pool the final BatchNorm output: features take negative values
    torch.manual_seed(0)
    m = create_model(arch, 10, (3, 32, 32), widening_factor=k).eval()
    with torch.no_grad():
        final_bn = m.bn if arch.startswith("wide") else m.features[-1]
        assert isinstance(final_bn, nn.BatchNorm2d)
        final_bn.bias.fill_(-1.0)
        f = m.forward_features(torch.randn(4, 3, 32, 32))
    assert (f < 0).any()


@pytest.mark.parametrize("k", [0.5, 1, 1.5, 2])
def test_densenet40_width(k):
    m = create_model("densenet40", 100, (3, 32, 32), widening_factor=k)
    g, c = round(8 * k), round(16 * k)
    expected = ((c + 6 * g) // 2 + 6 * g) // 2 + 6 * g  # three blocks of 6 layers, two halving transitions
    assert m.growth_rate == g and m.num_init_features == c
    assert m.num_features == expected == m.get_classifier().in_features
    assert m.get_classifier().out_features == 100
    assert sum(type(x).__name__ == "_DenseLayer" for x in m.modules()) == 18
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_densenet40_default_is_the_authors_network():
    m = create_model("densenet40", 10, (3, 32, 32))
    assert isinstance(m, DenseNet) and (m.growth_rate, m.num_init_features, m.num_features) == (8, 16, 88)


@pytest.mark.parametrize("depth, width", [(1, 7), (3, 64), (6, 16)])
def test_mlp_shape(depth, width):
    m = create_model("mlp", 3, (1, 8, 8), width=width, depth=depth)
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(linears) == depth + 1 and linears[0].in_features == 64
    assert m.num_features == width and m.get_classifier() is linears[-1]
    f = m.forward_features(torch.randn(5, 1, 8, 8))
    assert f.shape == (5, width) and (f >= 0).all()  # after the last ReLU


def test_registry_names_and_defaults():
    assert set(MODELS) == {*WRN, "densenet40", "mlp"}
    assert resolve_model_options("wide_resnet28") == {"widening_factor": 8.0}
    assert resolve_model_options("mlp", width=32) == {"width": 32, "depth": 5}


@pytest.mark.parametrize(
    "name, shape, opts, match",
    [
        ("resnet50", (3, 32, 32), {}, r"arch: expected one of wide_resnet16, .*mlp, found 'resnet50'"),
        ("mlp", (10,), {"width": 0}, r"width: expected an integer >= 1, found 0"),
        ("mlp", (10,), {"depth": 0}, r"depth: expected an integer >= 1, found 0"),
        ("wide_resnet16", (3, 32, 32), {"widening_factor": 0}, r"widening_factor: expected a number > 0"),
        ("densenet40", (3, 32, 32), {"widening_factor": -1}, r"widening_factor: expected a number > 0"),
        ("wide_resnet16", (3, 32, 32), {"width": 64}, r"width: not an option of arch wide_resnet16"),
        ("mlp", (10,), {"widening_factor": 2}, r"widening_factor: not an option of arch mlp"),
        ("wide_resnet16", (40,), {}, r"arch wide_resnet16: expected image inputs .*\(use arch mlp"),
    ],
)
def test_create_model_errors(name, shape, opts, match):
    with pytest.raises(RedrepError, match=match):
        create_model(name, 10, shape, **opts)
