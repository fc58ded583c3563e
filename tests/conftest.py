import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, os.cpu_count() or 1))

import toy_method  # noqa: E402,F401  (registers the 'toy' method)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def one_thread():
    """Small steps run fastest on one thread; on a shared 2-core machine two OpenMP threads can be
    many times slower (each parallel region waits for a descheduled thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
