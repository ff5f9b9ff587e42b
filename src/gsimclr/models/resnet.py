"""ResNet backbones: the G-SimCLR paper's CIFAR ResNet, ResNet-18 with a CIFAR stem, torchvision ResNets.

Every backbone maps images (N, 3, H, W) to features (N, num_features) after global average pooling
and carries ``num_features``.

Example:
    >>> import torch
    >>> net = PaperResNet(n_blocks=1)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import Bottleneck as TVBottleneck


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet v1, BN after each conv) with an optional projection shortcut.

    ``shortcut_bn=False`` is the notebooks' projection shortcut: a 1x1 convolution with a bias and no
    BatchNorm (``resnet_cifar10.projection_block``). The other convolutions have no bias: each is
    followed by BatchNorm, which cancels a bias exactly."""

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int = 1, shortcut_bn: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            nn.Conv2d(inner, inner, 3, stride, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            nn.Conv2d(inner, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if shortcut_bn:
                self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=True))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class PaperResNet(nn.Module):
    """The paper's CIFAR ResNet (``resnet_cifar10`` of keras-idiomatic-programmer, as the notebooks
    download it): a 16-filter 3x3 stem (BN, ReLU), then three groups of bottleneck blocks with
    16/64/128 inner and 64/128/256 output filters at strides 1/2/2 (the stride on the 3x3); each
    group is one projection block plus ``n_blocks`` identity blocks. ``n_blocks=3`` is the notebooks'
    ``n = 4`` (depth 38) used for pretraining, ``n_blocks=1`` their ResNet20 (``n = 2``) of the
    supervised baseline; features are 256-d after global pooling.
    ``shortcut_bn=False``: projection shortcuts without BatchNorm, as the notebooks.
    ``pre_pool_bn=True``: BatchNorm and ReLU before the pooling, the start of ``resnet_cifar10.classifier``
    (BN, ReLU, 8x8 average pool, Dense) that the notebooks' supervised ResNet20 ends with."""

    def __init__(self, n_blocks: int = 3, widths=((16, 64), (64, 128), (128, 256)), strides=(1, 2, 2),
                 shortcut_bn: bool = True, pre_pool_bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        in_ch = 16
        for (inner, out_ch), stride in zip(widths, strides):
            layers.append(Bottleneck(in_ch, inner, out_ch, stride, shortcut_bn))
            layers += [Bottleneck(out_ch, inner, out_ch, shortcut_bn=shortcut_bn) for _ in range(n_blocks)]
            in_ch = out_ch
        if pre_pool_bn:
            layers += [nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.num_features = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet without its classifier; ``cifar_stem`` swaps the 7x7/2 stem and max-pool
    for a 3x3/1 convolution, the usual choice for 32 px images. ``downsample_in_1x1`` moves each
    downsampling block's stride from its 3x3 convolution (torchvision's ResNet v1.5) to its first 1x1
    convolution (ResNet v1, as Keras' ``applications.ResNet50`` the notebooks use); ResNet-18's basic
    blocks have no 1x1 convolution and are unchanged."""

    def __init__(self, arch: str = "resnet18", cifar_stem: bool = False, downsample_in_1x1: bool = False):
        super().__init__()
        net = {"resnet18": resnet18, "resnet50": resnet50}[arch](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        if downsample_in_1x1:
            for block in net.modules():
                if isinstance(block, TVBottleneck) and block.conv2.stride != (1, 1):
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
        self.num_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def set_batch_norm(module: nn.Module, momentum: float | None = None, eps: float | None = None) -> nn.Module:
    """Set the running-statistics ``momentum`` (torch's convention: Keras' 0.99 is 0.01) and ``eps`` of
    every BatchNorm layer in ``module``; ``None`` keeps the layer's own. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                m.momentum = momentum
            if eps is not None:
                m.eps = eps
    return module


@torch.no_grad()
def keras_init(module: nn.Module, conv: str = "glorot_uniform") -> nn.Module:
    """Keras' initialisers on ``module``: convolutions ``conv`` (``"he_normal"``, a normal with std
    ``sqrt(2 / fan_in)`` truncated at 2 std, as ``resnet_cifar10`` asks for, or ``"glorot_uniform"``,
    Keras' default, as ``applications.ResNet50``), linear layers ``glorot_uniform``, every bias 0,
    BatchNorm weight 1 and bias 0 (torch's already). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and conv == "he_normal":
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # Keras' truncation correction
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module
