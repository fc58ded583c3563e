"""Small CNNs: the NMM paper's networks (Table 2, §8.2), a fast CPU CNN, and the NMM §8.1 MLP."""

from torch import Tensor, nn


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class NMMNet(nn.Module):
    """The body of an NMM Table 2 network, i.e. everything before the K-cluster layer.

    ``plan`` is the Table 2 string without its final F layer, e.g. "C64 M C128 M C256 F32" (MNIST).
    Table 2 gives only filter counts; we use 3x3 convs (padding 1) with BatchNorm + ReLU, 2x2
    max-pools, and ReLU after hidden F layers. These choices reproduce the parameter counts of
    Table 2 with an F10 output (0.77M MNIST at 28 px, 1.31M CIFAR at 32 px, 2.70M STL-10 at
    96 px), which confirms that the last conv map is flattened into the F layer without global
    pooling. Input is usually the 2-channel Sobel image (§8.2).
    """

    def __init__(self, plan: str, in_channels: int, image_size: int):
        super().__init__()
        tokens = plan.split()
        layers: list[nn.Module] = []
        c, s = in_channels, image_size
        for tok in (t for t in tokens if t[0] != "F"):
            if tok == "M":
                layers.append(nn.MaxPool2d(2))
                s //= 2
            else:
                layers += _conv(c, int(tok[1:]))
                c = int(tok[1:])
        layers.append(nn.Flatten())
        d = c * s * s
        for tok in (t for t in tokens if t[0] == "F"):
            layers += [nn.Linear(d, int(tok[1:])), nn.ReLU(inplace=True)]
            d = int(tok[1:])
        self.body = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


NMM_PLANS = {  # NMM Table 2 without the final K-cluster layer
    "nmm-mnist": "C64 M C128 M C256 F32",
    "nmm-cifar": "C64 C64 M C128 C128 M C256 C256",
    "nmm-stl": "C64 C64 M C128 C128 M C256 C256 M C256 C256",
}


class SmallCNN(nn.Module):
    """Fast CNN for a 2-core CPU on 28/32 px: four stride-2 3x3 conv blocks 32-64-128-256 with
    BatchNorm + ReLU, then global average pooling; ``out_dim`` 256."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += _conv(c, w, stride=2)
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class MLP(nn.Module):
    """NMM §8.1 perceptron body: two 32-unit ReLU hidden layers (``out_dim`` 32). Flattens its
    input of ``in_features`` values (``in_channels * image_size**2`` for images, D for points)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (32, 32)):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        self.body = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
