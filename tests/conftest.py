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
