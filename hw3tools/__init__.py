"""The project's tooling: what `make` (or `python -m hw3tools`) and the tests use. Nothing here ships in the zip.

The appendix's module, appendix/hw3_appendix.py, sits beside its notebook (whose kernel starts in appendix/), so
that folder is put on the import path here, once, for the study and the tests that use it.
"""
import sys
from pathlib import Path

APPENDIX_DIR = Path(__file__).resolve().parents[1] / "appendix"
if str(APPENDIX_DIR) not in sys.path:
    sys.path.append(str(APPENDIX_DIR))
