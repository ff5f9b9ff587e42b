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

import torch
from torch import nn
from torchvision.models import resnet18, resnet50


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet v1, BN after each conv) with an optional projection shortcut."""

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            nn.Conv2d(inner, inner, 3, stride, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            nn.Conv2d(inner, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class PaperResNet(nn.Module):
    """The paper's CIFAR ResNet: a 16-filter 3x3 stem (BN, ReLU), then three groups of bottleneck
    blocks with 16/64/128 inner and 64/128/256 output filters at strides 1/2/2; each group is one
    projection block plus ``n_blocks`` identity blocks. ``n_blocks=3`` is the paper's depth 38
    (3 groups x 4 blocks x 3 convs + stem + classifier); features are 256-d after global pooling."""

    def __init__(self, n_blocks: int = 3, widths=((16, 64), (64, 128), (128, 256)), strides=(1, 2, 2)):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        in_ch = 16
        for (inner, out_ch), stride in zip(widths, strides):
            layers.append(Bottleneck(in_ch, inner, out_ch, stride))
            layers += [Bottleneck(out_ch, inner, out_ch) for _ in range(n_blocks)]
            in_ch = out_ch
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.num_features = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet without its classifier; ``cifar_stem`` swaps the 7x7/2 stem and max-pool
    for a 3x3/1 convolution, the usual choice for 32 px images."""

    def __init__(self, arch: str = "resnet18", cifar_stem: bool = False):
        super().__init__()
        net = {"resnet18": resnet18, "resnet50": resnet50}[arch](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        self.num_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
