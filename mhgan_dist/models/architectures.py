"""Reference GAN architectures: the paper's toy MLP GAN and DCGAN.

Every generator maps float32 latents ``[B, latent_dim]`` to float32 samples
``[B, *sample_shape]``; every discriminator maps samples to float32 logits
``[B]`` (the final sigmoid of the originals is left out, so that the logit
stays exact where the probability would round to 0 or 1).

- MLP (Turner et al. 2019, after Azadi et al. 2019): 4 hidden fully connected
  ReLU layers of 100 units in G and in D, a linear G output, one D logit. The
  paper uses a 2-D latent.
- DCGAN (Radford et al. 2016, as in the PyTorch examples repository that the
  paper's code builds on): transposed convolutions with batch norm and ReLU in
  G ending in tanh (samples in ``[-1, 1]``); strided convolutions with batch
  norm and LeakyReLU(0.2) in D. ``image_size`` 64 is the example's network; 32
  drops one stage (CIFAR-sized data) and 8 keeps one (scikit-learn digits).
- DCGAN for 28x28 (Fashion-MNIST, no padding to 32): G maps the latent
  linearly to ``2w x 7 x 7``, then batch norm and ReLU, a stride-2 transposed
  convolution to ``w x 14 x 14``, batch norm and ReLU, and a stride-2
  transposed convolution to ``channels x 28 x 28`` with tanh. D mirrors it:
  stride-2 convolutions ``channels -> w`` (28 -> 14, LeakyReLU 0.2) and
  ``w -> 2w`` (14 -> 7, batch norm, LeakyReLU 0.2), then a linear map to one
  logit. :func:`build_pair` picks it for ``dcgan`` at image size 28.
  Cost per sample at w = 64, latent 100, one channel, counting every
  multiply-add of the linear and convolution layers (a transposed convolution
  costs ``in_elements * out_channels * k * k``): G 627,200 + 6,422,528 +
  200,704 = 7,250,432; D 200,704 + 6,422,528 + 6,272 = 6,629,504; G+D
  13,879,936, about 14M multiply-adds per MH proposal (``tests/local/test_models.py``
  recounts it with forward hooks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mhgan_dist.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "DCGAN28Generator",
    "DCGAN28Discriminator",
    "build_pair",
]

ARCHITECTURES: tuple[str, ...] = ("mlp", "dcgan")


def _mlp(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class MLPGenerator(nn.Module):
    """``[B, latent_dim]`` -> ``[B, out_dim]``, linear output (data coordinates)."""

    def __init__(self, latent_dim: int = 2, out_dim: int = 2, hidden: int = 100, layers: int = 4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, out_dim, hidden, layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """``[B, in_dim]`` -> ``[B]`` logits."""

    def __init__(self, in_dim: int = 2, hidden: int = 100, layers: int = 4) -> None:
        super().__init__()
        self.net = _mlp(in_dim, 1, hidden, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _stages(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and ``image_size`` (a power of two >= 8)."""
    stages = int(round(math.log2(image_size))) - 2
    if stages < 1 or 4 * 2**stages != image_size:
        raise ConfigError(f"the DCGAN image size must be 28 or a power of two of at least 8, not {image_size}.")
    return stages


def _dcgan_init(module: nn.Module) -> None:
    """The DCGAN example's initialisation: conv N(0, 0.02), batch-norm scale N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """``[B, latent_dim]`` -> ``[B, channels, image_size, image_size]`` in ``[-1, 1]``.

    ``width`` is the example's ``ngf``; the 4x4 stage has ``width * 2**(stages-1)``
    channels and each stride-2 stage halves them (64x64: 512, 256, 128, 64).
    """

    def __init__(self, latent_dim: int = 100, channels: int = 3, image_size: int = 64, width: int = 64) -> None:
        super().__init__()
        stages = _stages(image_size)
        self.latent_dim = latent_dim
        c = width * 2 ** (stages - 1)
        modules: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            modules += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        modules += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*modules)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """``[B, channels, image_size, image_size]`` -> ``[B]`` logits; ``width`` is the example's ``ndf``."""

    def __init__(self, channels: int = 3, image_size: int = 64, width: int = 64) -> None:
        super().__init__()
        stages = _stages(image_size)
        c = width
        modules: list[nn.Module] = [nn.Conv2d(channels, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(stages - 1):
            modules += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        modules.append(nn.Conv2d(c, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*modules)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


class DCGAN28Generator(nn.Module):
    """``[B, latent_dim]`` -> ``[B, channels, 28, 28]`` in ``[-1, 1]``; 7x7 stage has ``2 * width`` channels."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.width = width
        self.project = nn.Linear(latent_dim, 2 * width * 7 * 7, bias=False)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        self.apply(_dcgan_init)
        nn.init.normal_(self.project.weight, 0.0, 0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z.reshape(z.shape[0], -1)).reshape(z.shape[0], 2 * self.width, 7, 7))


class DCGAN28Discriminator(nn.Module):
    """``[B, channels, 28, 28]`` -> ``[B]`` logits; the mirror of :class:`DCGAN28Generator`."""

    def __init__(self, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, 1),
        )
        self.apply(_dcgan_init)
        nn.init.normal_(self.net[-1].weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


def build_pair(
    architecture: str, sample_shape: Sequence[int], *, latent_dim: int, width: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """Fresh (G, D) for ``sample_shape``: ``"mlp"`` wants ``(d,)``, ``"dcgan"`` wants ``(C, S, S)``.

    ``width`` is the MLP's hidden units (default 100) or DCGAN's ngf = ndf
    (default 64). DCGAN takes a power-of-two side of at least 8, or 28
    (:class:`DCGAN28Generator` / :class:`DCGAN28Discriminator`).
    """
    shape = tuple(int(s) for s in sample_shape)
    if latent_dim < 1:
        raise ConfigError(f"the latent dimension must be positive, not {latent_dim}.")
    if architecture == "mlp":
        if len(shape) != 1:
            raise ConfigError(f"the MLP GAN needs flat samples of shape (d,), not {shape}.")
        hidden = width or 100
        return MLPGenerator(latent_dim, shape[0], hidden), MLPDiscriminator(shape[0], hidden)
    if architecture == "dcgan":
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(f"DCGAN needs square images of shape (C, S, S), not {shape}.")
        channels, size = shape[0], shape[1]
        ngf = width or 64
        if size == 28:
            return DCGAN28Generator(latent_dim, channels, ngf), DCGAN28Discriminator(channels, ngf)
        return DCGANGenerator(latent_dim, channels, size, ngf), DCGANDiscriminator(channels, size, ngf)
    raise ConfigError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
