"""Backbones and heads (mixlab.nets): shapes, the batched expert head, error messages."""

import pytest
import torch
from torch import nn

from mixlab.nets import BACKBONES, ExpertHead, GatingHead, ProjectionHead, build_backbone


def _cases():
    """Every image backbone on 1 and 3 channels; CIFAR-stem ResNets at 32 px only (speed)."""
    for name in BACKBONES:
        if name == "mlp":
            continue
        if name.endswith("-imagenet") or name == "nmm-stl":
            sizes = (96,)
        else:
            sizes = (32,) if name.startswith("resnet") else (28, 32)
        for c in (1, 3):
            for s in sizes:
                yield name, c, s


@pytest.mark.parametrize("name,channels,size", list(_cases()))
def test_backbone_output_shape(name, channels, size):
    net = build_backbone(name, channels, size).eval()
    with torch.no_grad():
        y = net(torch.randn(2, channels, size, size))
    assert y.shape == (2, net.out_dim)


def test_nmm_table2_parameter_counts():
    """NMM Table 2: 0.8M (MNIST), 1.3M (CIFAR), 2.7M (STL-10), counting the F10 output layer."""
    for name, size, millions in [("nmm-mnist", 28, 0.8), ("nmm-cifar", 32, 1.3), ("nmm-stl", 96, 2.7)]:
        net = build_backbone(name, 2, size)
        n = sum(p.numel() for p in net.parameters()) + 10 * net.out_dim + 10
        assert abs(n / 1e6 - millions) < 0.05, (name, n)


def test_mlp_on_points():
    for size in (0, 1):  # image_size 0 or 1 both mean point features
        net = build_backbone("mlp", 2, size)
        assert net(torch.randn(5, 2)).shape == (5, 32) and net.out_dim == 32
    assert build_backbone("mlp", 1, 28)(torch.randn(5, 1, 28, 28)).shape == (5, 32)


def test_unknown_backbone_lists_names():
    with pytest.raises(ValueError, match="resnet18.*small-cnn") as e:
        build_backbone("vgg", 3, 32)
    assert "\n" not in str(e.value)


def test_expert_head_equals_loop_of_linears():
    torch.manual_seed(0)
    head = ExpertHead(16, n_experts=4, out_dim=8)
    x = torch.randn(5, 16)
    loop = []
    for k in range(4):
        lin = nn.Linear(16, 8)
        with torch.no_grad():
            lin.weight.copy_(head.weight[k].T)
            lin.bias.copy_(head.bias[k])
        loop.append(lin(x))
    torch.testing.assert_close(head(x), torch.stack(loop, 1))


def test_expert_head_shared_rows_identical():
    head = ExpertHead(16, n_experts=3, out_dim=8, shared=True)
    y = head(torch.randn(5, 16))
    assert y.shape == (5, 3, 8)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    assert sum(p.numel() for p in head.parameters()) == 16 * 8 + 8


def test_projection_and_gating_heads():
    proj = ProjectionHead(32, 64, 16, n_layers=3)
    assert proj(torch.randn(4, 32)).shape == (4, 16)
    assert isinstance(proj.net[-1], nn.Linear)
    assert ProjectionHead(32, 64, 16, n_layers=1, batchnorm=False)(torch.randn(4, 32)).shape == (4, 16)
    assert GatingHead(32, 10)(torch.randn(4, 32)).shape == (4, 10)
