import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw3tools.notebook import load_definitions  # noqa: E402


@pytest.fixture(scope="session")
def hw():
    """The notebook's imports, functions and classes (nothing trained, nothing run)."""
    return load_definitions()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
