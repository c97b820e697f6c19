import io
import os
import re
import sys
import warnings
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


# --------------------------------------------------------------------------------------------------------------
# The encoding probe (tests/test_setup.py runs the fast suite with it): text I/O without encoding= in our files is
# an error, whether it opens the file itself or goes through pathlib. Third-party code is not ours to fix.
# --------------------------------------------------------------------------------------------------------------
OUR_FILES = re.compile(re.escape(str(ROOT)) + r"[/\\](?!\.venv)")
OUR_MODULES = r"(hw3_helpers|hw3tools(\..*)?|bench(\..*)?|memory|conftest|test_\w+)$"


def _fail_our_default_encodings():
    if not hasattr(io, "text_encoding"):
        return
    warnings.filterwarnings("error", category=EncodingWarning, module=OUR_MODULES)
    original = io.text_encoding

    def text_encoding(encoding, stacklevel=2):
        if encoding is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.endswith(("pathlib.py", "subprocess.py")):
                frame = frame.f_back
            if frame is not None and OUR_FILES.match(frame.f_code.co_filename):
                raise EncodingWarning(f"{frame.f_code.co_filename}:{frame.f_lineno}: text I/O without encoding=")
        return original(encoding, stacklevel + 1)

    io.text_encoding = text_encoding


if os.environ.get("HW3_ENCODING_PROBE") == "1":
    _fail_our_default_encodings()
