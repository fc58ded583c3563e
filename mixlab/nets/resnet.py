"""ResNet-18/34 backbones from torchvision, without the classifier (MiCE App. D).

The CIFAR stem (MiCE App. D, after SimCLR) replaces the 7x7 stride-2 conv with a 3x3 stride-1
conv and drops the first max-pool; the ImageNet stem is torchvision's. Any number of input
channels: the first conv is rebuilt for ``in_channels``. ``fc`` is the identity, so the module
returns the 512-d pooled feature (``out_dim``).
"""

from torch import nn
from torchvision.models import resnet18, resnet34

_ARCHS = {"resnet18": resnet18, "resnet34": resnet34}


def build_resnet(arch: str, in_channels: int, cifar_stem: bool) -> nn.Module:
    """torchvision ``arch`` (randomly initialised) with the chosen stem and ``fc = Identity``."""
    net = _ARCHS[arch](weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net
