"""LARS: layer-wise trust ratio on weight matrices, plain momentum SGD on biases."""
import torch

from mixlab.nets.lars import LARS


def test_first_step_of_a_weight_matrix_has_norm_lr_times_trust_times_weight_norm():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(4))
    w.grad, b.grad = torch.randn(5, 4) * 100.0, torch.randn(4)
    w0, b0 = w.detach().clone(), b.detach().clone()
    LARS([w, b], lr=0.5, weight_decay=0.1, trust_coefficient=0.001).step()
    torch.testing.assert_close((w.detach() - w0).norm(), 0.5 * 0.001 * w0.norm())  # whatever the gradient scale
    torch.testing.assert_close(b.detach(), b0 - 0.5 * b.grad)                       # no decay, no trust ratio
