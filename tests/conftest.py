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


def _text_opener_locations():
    import pathlib
    import subprocess

    locations = []
    for module in (pathlib, subprocess):
        if module.__spec__.submodule_search_locations:
            locations += [os.path.join(folder, "") for folder in module.__spec__.submodule_search_locations]
        else:
            locations.append(module.__file__)
    return tuple(os.path.normcase(location) for location in locations)


_TEXT_OPENERS = _text_opener_locations()


def _opens_text_for_its_caller(filename):
    """Whether a frame's file is pathlib's or subprocess's: they hand encoding=None on to io.text_encoding for their
    caller, so the caller is the one that left it out. Python 3.13 made pathlib a package (pathlib/_local.py,
    pathlib/_abc.py), so a package counts by its folder, a module by its file."""
    return os.path.normcase(filename).startswith(_TEXT_OPENERS)


def _fail_our_default_encodings():
    if not hasattr(io, "text_encoding"):
        return
    warnings.filterwarnings("error", category=EncodingWarning, module=OUR_MODULES)
    original = io.text_encoding

    def text_encoding(encoding, stacklevel=2):
        if encoding is None:
            frame = sys._getframe(1)
            while frame is not None and _opens_text_for_its_caller(frame.f_code.co_filename):
                frame = frame.f_back
            if frame is not None and OUR_FILES.match(frame.f_code.co_filename):
                raise EncodingWarning(f"{frame.f_code.co_filename}:{frame.f_lineno}: text I/O without encoding=")
        return original(encoding, stacklevel + 1)

    io.text_encoding = text_encoding


if os.environ.get("HW3_ENCODING_PROBE") == "1":
    _fail_our_default_encodings()
