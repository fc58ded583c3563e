"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): shuffle-BN round trip."""
import json
import sys

import torch
import torch.distributed as tdist
from torch import nn

from mixlab.methods.momentum import shuffled_forward
from mixlab.utils import distributed as dist

tdist.init_process_group("gloo")
torch.manual_seed(100 + dist.rank())
x = torch.randn(8, 4) + 3 * dist.rank()          # the ranks' batches differ in mean
linear = nn.Linear(4, 3)
torch.manual_seed(0)
linear.reset_parameters()                        # the same weights on both ranks
bn = nn.BatchNorm1d(4)
torch.manual_seed(7)                             # the same permutation source on rank 0
result = {
    "row_wise_exact": bool(torch.equal(shuffled_forward(linear, x), linear(x).detach())),
    "bn_mean_local": float(bn(x).mean()),        # plain forward: normalised by this rank's batch alone
    "bn_mean_shuffled": float(shuffled_forward(bn, x).mean()),
    "tuple_exact": all(torch.equal(a, b.detach()) for a, b in zip(shuffled_forward(lambda t: (linear(t), 2 * t), x),
                                                                  (linear(x), 2 * x))),
}
if dist.is_main():
    json.dump(result, open(sys.argv[1], "w"))
dist.shutdown()
