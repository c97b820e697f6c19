import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hw3_helpers  # noqa: E402


@pytest.fixture(scope="session")
def hw():
    """The notebook's imports, functions and classes (nothing trained, nothing run)."""
    return hw3_helpers.load_definitions()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
