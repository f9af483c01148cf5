"""The networks of the paper, behind one small interface.

Every model exposes its last hidden layer and its linear readout the same way
(the interface timm uses):

* ``forward_features(x)`` returns the penultimate features, shape (N, W);
* ``forward_head(f, pre_logits=False)`` maps those features to logits (N, C),
  or returns them unchanged when ``pre_logits`` is true;
* ``get_classifier()`` returns the final :class:`torch.nn.Linear` (C x W);
* ``num_features`` is W.

``forward(x) == forward_head(forward_features(x))``.

Models
------
``wide_resnet16/22/28/40``
    Wide-ResNet-d-k for 32x32 images (Zagoruyko and Komodakis), as the paper's
    authors built it: pre-activation basic blocks, a 1x1 convolution shortcut
    where the shape changes, no bias in convolutions, a final BatchNorm and
    *no ReLU before the global average pool*; kaiming-normal (fan_in,
    leaky_relu) convolutions, BatchNorm weights uniform in (0, 1). Any real
    widening factor k is accepted: the three groups have round(16k),
    round(32k) and round(64k) channels (at least 1), so W = round(64k)
    (k = 0.25 gives W = 16, k = 16 gives W = 1024).
``densenet40``
    DenseNet-BC-40 with the CIFAR stem: three dense blocks of six bottleneck
    layers (bn_size 4), transitions halving the channels, round(16k) initial
    features and growth rate round(8k) (k = 1 is the authors' network, W = 88),
    again without a ReLU before the pool.
``mlp``
    A fully connected ReLU network with ``depth`` hidden layers of ``width``
    units each, then the readout; the input is flattened. ``depth`` counts
    hidden layers: the authors' fully connected networks of depth 6
    (``nlayers`` 6: the input layer, 4 hidden layers of width W, the output
    layer) are ``depth=4``.

The registry of names and options is :mod:`redrep.nets.config` (no torch);
:data:`MODELS` adds each architecture's builder. :func:`initialize` applies
an initialization other than the architectures' own (``orthogonal``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import RedrepError, check_float, check_int
from .config import ARCHS, MODEL_OPTIONS, ORTHOGONAL_GAIN, check_arch, resolve_model_options  # noqa: F401


def scaled_channels(base: int, k: float) -> int:
    """round(base * k), rounding halves up, and at least 1."""
    return max(1, int(math.floor(base * k + 0.5)))


class ReadoutInterface(nn.Module):
    """Shared head of all models: ``self.fc`` is the readout, ``num_features`` its input width."""

    fc: nn.Linear
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------- Wide-ResNet
class _PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut (1x1 conv of the raw input when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(ReadoutInterface):
    """Wide-ResNet-``depth``-``widening_factor``.

    Parameters
    ----------
    depth : int, with (depth - 4) divisible by 6 (16, 22, 28, 40, ...)
    widening_factor : float > 0, k
    num_classes : int, C
    in_channels : int, channels of the input images

    Input (N, in_channels, H, W_img); ``forward_features`` output (N, round(64k)).
    """

    def __init__(self, depth: int = 28, widening_factor: float = 8, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        depth = check_int(depth, "depth", min_value=10)
        if (depth - 4) % 6:
            raise RedrepError(f"depth: expected a Wide-ResNet depth with (depth - 4) divisible by 6, found {depth}")
        k = check_float(widening_factor, "widening_factor")
        if k <= 0:
            raise RedrepError(f"widening_factor: expected a number > 0, found {k}")
        n = (depth - 4) // 6
        widths = [scaled_channels(16, k), scaled_channels(32, k), scaled_channels(64, k)]
        self.depth, self.widening_factor, self.widths = depth, k, widths
        self.conv0 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        groups, in_ch = [], 16
        for out_ch, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_PreActBlock(in_ch, out_ch, stride if i == 0 else 1))
                in_ch = out_ch
            groups.append(nn.Sequential(*blocks))
        self.group0, self.group1, self.group2 = groups
        self.bn = nn.BatchNorm2d(in_ch)
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                # uniform(0, 1) rather than 1: the authors' choice, which they report trains much better
                nn.init.uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        x = self.group2(self.group1(self.group0(self.conv0(x))))
        x = self.bn(x)  # no ReLU here: the published networks pool the BN output directly
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ------------------------------------------------------------------- DenseNet
class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_size: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, new], 1)


class _Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.BatchNorm2d(in_ch), nn.ReLU(), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.AvgPool2d(2, stride=2)
        )


class DenseNet(ReadoutInterface):
    """DenseNet-BC with the CIFAR stem (a 3x3 convolution, no pooling).

    Parameters
    ----------
    block_config : layers per dense block ((6, 6, 6) is DenseNet-40)
    growth_rate, num_init_features, bn_size : as in Huang et al.
    num_classes, in_channels : output classes, input channels

    Input (N, in_channels, H, W_img); ``forward_features`` output (N, num_features).
    """

    def __init__(
        self,
        block_config=(6, 6, 6),
        growth_rate: int = 8,
        num_init_features: int = 16,
        bn_size: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_init_features, 3, padding=1, bias=False),
            nn.BatchNorm2d(num_init_features),
            nn.ReLU(),
        ]
        ch = num_init_features
        for i, n_layers in enumerate(block_config):
            for _ in range(n_layers):
                layers.append(_DenseLayer(ch, growth_rate, bn_size))
                ch += growth_rate
            if i < len(block_config) - 1:
                layers.append(_Transition(ch, max(1, ch // 2)))
                ch = max(1, ch // 2)
        layers.append(nn.BatchNorm2d(ch))  # no ReLU after it, as in the published networks
        self.features = nn.Sequential(*layers)
        self.growth_rate, self.num_init_features = growth_rate, num_init_features
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)


# ------------------------------------------------------------------------ MLP
class MLP(ReadoutInterface):
    """``depth`` hidden layers Linear-ReLU of ``width`` units, then the readout.

    Input (N, *in_shape), flattened to (N, in_features); ``forward_features``
    output (N, width), the last hidden layer after its ReLU. PyTorch's default
    initialisation.
    """

    def __init__(self, in_features: int, num_classes: int = 10, depth: int = 5, width: int = 512):
        super().__init__()
        depth = check_int(depth, "depth", min_value=1)
        width = check_int(width, "width", min_value=1)
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.depth, self.width = depth, width
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x):
        return self.body(torch.flatten(x, 1))


# ------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered architecture and which options it takes (those of its ArchInfo)."""

    build: Callable[..., ReadoutInterface]
    options: tuple[str, ...]
    defaults: dict
    needs_image: bool
    summary: str


def _wrn(depth):
    def build(num_classes, in_shape, widening_factor):
        return WideResNet(depth, widening_factor, num_classes, in_channels=in_shape[0])

    return build


def _densenet40(num_classes, in_shape, widening_factor):
    k = check_float(widening_factor, "widening_factor")
    if k <= 0:
        raise RedrepError(f"widening_factor: expected a number > 0, found {k}")
    return DenseNet(
        (6, 6, 6),
        growth_rate=scaled_channels(8, k),
        num_init_features=scaled_channels(16, k),
        num_classes=num_classes,
        in_channels=in_shape[0],
    )


def _mlp(num_classes, in_shape, width, depth):
    return MLP(math.prod(in_shape), num_classes, depth=depth, width=width)


_BUILDERS = {**{f"wide_resnet{d}": _wrn(d) for d in (16, 22, 28, 40)}, "densenet40": _densenet40, "mlp": _mlp}

#: Registered architectures by name (the names and options of :data:`redrep.nets.config.ARCHS`, with builders).
MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(_BUILDERS[name], info.options, info.defaults, info.needs_image, info.summary)
    for name, info in ARCHS.items()
}


def create_model(name: str, num_classes: int, in_shape, **options) -> ReadoutInterface:
    """Build a registered architecture.

    Parameters
    ----------
    name : a key of :data:`MODELS`
    num_classes : C, the readout's outputs (1: a one-output readout, a sign classifier)
    in_shape : shape of one input, (channels, height, width) for the convolutional networks
    **options : ``widening_factor`` (Wide-ResNets, DenseNet), ``width`` and ``depth`` (mlp); None means default

    Returns
    -------
    nn.Module with ``forward_features``, ``forward_head``, ``get_classifier`` and ``num_features``.
    """
    check_arch(name)
    spec = MODELS[name]
    opts = resolve_model_options(name, **options)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    in_shape = tuple(int(s) for s in in_shape)
    if spec.needs_image and len(in_shape) != 3:
        raise RedrepError(
            f"arch {name}: expected image inputs of shape (channels, height, width), found inputs of shape "
            f"{in_shape} (use arch mlp for vector data)"
        )
    return spec.build(num_classes, in_shape, **opts)


def initialize(model: nn.Module, init: str = "default") -> nn.Module:
    """Re-initialize ``model`` in place: ``default`` leaves the architecture's own initialization.

    ``orthogonal``: the weight of every :class:`torch.nn.Linear` becomes a
    random orthogonal matrix (orthonormal rows or columns, whichever are
    fewer; gain :data:`redrep.nets.config.ORTHOGONAL_GAIN`) and its bias 0,
    drawn from torch's global generator in the order of ``model.modules()``.
    Convolutions and batch norms keep their initialization.
    """
    if init == "default":
        return model
    if init != "orthogonal":
        raise RedrepError(f"init: expected default or orthogonal, found {init!r}")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, gain=ORTHOGONAL_GAIN)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model
