"""The G-SimCLR paper's denoising autoencoders, whose pooled latent codes are clustered into
pseudo labels.

- ``shallow`` (32 px): conv 32-64-128, each 3x3 with BN, ReLU and 2x2 max-pool, latent 4x4x128;
  a mirrored decoder with upsampling and a sigmoid output.
- ``deep`` (224 px): the same pattern with 5x5 convs 64-128-256-512-1024 (latent 7x7x1024).

``decoder`` orders each decoder stage: ``"conv_first"`` (convolution at the low resolution, then a
2x upsampling) or ``"upsample_first"`` (upsampling, then the convolution at the higher resolution),
the notebooks' ``make_autoencoder``. Both end with a convolution to 3 channels and a sigmoid.

Example:
    >>> import torch
    >>> ae = DenoisingAutoencoder("shallow")
    >>> ae(torch.rand(2, 3, 32, 32)).shape, ae.encode(torch.rand(2, 3, 32, 32)).shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 128]))
"""

from __future__ import annotations

import torch
from torch import nn

from gsimclr.models.registry import AUTOENCODER_DECODERS as DECODERS
from gsimclr.models.registry import AUTOENCODERS as ARCHITECTURES


def _conv(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class DenoisingAutoencoder(nn.Module):
    def __init__(self, arch: str = "shallow", decoder: str = "conv_first"):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown autoencoder {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder order {decoder!r}; choose one of {', '.join(DECODERS)}")
        widths, kernel = ARCHITECTURES[arch]
        enc: list[nn.Module] = []
        in_ch = 3
        for w in widths:
            enc += _conv(in_ch, w, kernel) + [nn.MaxPool2d(2)]
            in_ch = w
        dec: list[nn.Module] = []
        for w in reversed(widths):
            up = [nn.Upsample(scale_factor=2, mode="nearest")]
            dec += _conv(in_ch, w, kernel) + up if decoder == "conv_first" else up + _conv(in_ch, w, kernel)
            in_ch = w
        dec += [nn.Conv2d(in_ch, 3, kernel, padding=kernel // 2), nn.Sigmoid()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.downsampling = 2 ** len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The clustering feature: the latent code, globally average-pooled."""
        return self.encoder(x).mean(dim=(2, 3))
