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


from hw3tools.notebook import APPENDIX, load_definitions, module_of  # noqa: E402  (hw3tools puts appendix/ on the path)


@pytest.fixture(scope="session")
def hw():
    """The homework notebook's imports, functions, classes and constants (nothing trained, nothing run)."""
    return load_definitions()


@pytest.fixture(scope="session")
def appendix_code(hw):
    """The appendix notebook's own definitions (the KV cache, the banded sliding window), with the homework's names
    they import (`from homework3 import ...`) taken from `hw`, as the appendix's kernel takes them from the run."""
    import nbformat

    previous = sys.modules.get("homework3")
    sys.modules["homework3"] = hw
    try:
        sources = [c.source for c in nbformat.read(APPENDIX, as_version=4).cells if c.cell_type == "code"]
        return module_of(sources, name="appendix")
    finally:
        if previous is None:
            sys.modules.pop("homework3", None)
        else:
            sys.modules["homework3"] = previous


# --------------------------------------------------------------------------------------------------------------
# The e2e tests' runs: each notebook executes once per test session, at its real budget, into a scratch folder (the
# repository's notebooks are only read, its outputs untouched). Every test that needs a whole run reads these.
# (Running the appendix and the small-budget copy as processes beside the other tests was measured slower on two
# cores: their torch threads and the tests' own contend, 440 s against 357 s for the suite.)
# --------------------------------------------------------------------------------------------------------------
STUDENT_SENTENCE = "A sentence I added to the temperature paragraph myself."
STUDENT_PARAGRAPH = "A paragraph of my own, in a markdown cell inside the report."


def small_budget(nb) -> None:
    """One epoch on a tenth of the training set, evaluated on a tenth of the test set, and the sampling comparison on
    two prompts: edits to a copy only, for a route that needs a kernel of its own and tests that the notebook runs,
    not what it reaches."""
    import re

    training = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("model = Transformer("))
    training.source, found = re.subn(r"num_epochs=\d+", "num_epochs=1", training.source)
    assert found == 1
    data = next(c for c in nb.cells if c.cell_type == "code" and "TRAIN_DATASET, _ = generate_dataset(" in c.source)
    data.source, found = re.subn(r"((?:TRAIN_DATASET, _|TEST_DATASET, generators) = generate_dataset\([^)]*"
                                 r"num_entries=)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) // 10}", data.source)
    assert found == 2
    sampling = next(c for c in nb.cells if c.cell_type == "code" and "prompt_gens = [" in c.source)
    sampling.source, found = re.subn(r"np\.random\.choice\(len\(ordered\), (\d+),", "np.random.choice(len(ordered), 2,",
                                     sampling.source)
    assert found == 1


@pytest.fixture(scope="session")
def homework_run(tmp_path_factory):
    """homework3.ipynb with a student's edits to the report (a sentence in a report cell, a markdown paragraph of
    their own), executed top to bottom through nbclient into a scratch folder, with a stand-in for Colab's frontend
    on its kernel's path: the last cell does what it does in Colab (reads the running notebook, checks it, downloads
    the zip). After the last cell, in the same kernel, the Colab cases of running the export cell alone
    (tests/colab_standin.py). Returns the folder, the executed notebook, its metrics and what the export cell did."""
    import json
    import shutil

    import colab_standin
    import nbformat
    from nbformat.v4 import new_markdown_cell

    from hw3tools import notebook as runner

    out = tmp_path_factory.mktemp("run")
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    temperature = next(c for c in nb.cells if "**Temperature.**" in c.source)
    temperature.source = temperature.source.replace('""")', f'{STUDENT_SENTENCE}\n""")')
    nb.cells.insert(nb.cells.index(temperature) + 1, new_markdown_cell(STUDENT_PARAGRAPH))  # untagged, as Jupyter
    source = out / "homework3.ipynb"
    nbformat.write(nb, source)
    shutil.copy(runner.ROOT / "hw3_helpers.py", out / "hw3_helpers.py")  # beside the notebook, as in the zip
    frontend = tmp_path_factory.mktemp("colab")
    alone = {}
    executed = runner.run_notebook(source, out, env=colab_standin.install(frontend),
                                   on_cell_execute=colab_standin.frontend_hook(frontend),
                                   then=colab_standin.export_cell_alone_after_the_run(out, frontend, alone))
    return {"out": out, "source": source, "executed": executed, "frontend": frontend, "alone": alone,
            "metrics": json.loads((out / "build" / "metrics.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="session")
def appendix_run(homework_run, tmp_path_factory):
    """appendix/appendix.ipynb (only read) executed on the session's homework run, in a folder of its own: the run's
    build/metrics.json and build/model.pt copied there, and beside them build/appendix.ipynb, build/appendix.html,
    build/appendix_metrics.json and appendix/figures/ (the homework's folder is left as it was)."""
    import json
    import shutil

    from hw3tools import notebook as runner

    out = tmp_path_factory.mktemp("appendix-run")
    (out / "build").mkdir()
    for name in ("metrics.json", "model.pt"):
        shutil.copy(homework_run["out"] / "build" / name, out / "build" / name)
    executed = runner.run_notebook(APPENDIX, out)
    return {"out": out, "executed": executed,
            "metrics": json.loads((out / "build" / "appendix_metrics.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="session")
def notebook_alone(tmp_path_factory):
    """`jupyter nbconvert --execute --inplace` on a copy of homework3.ipynb at a small budget (`small_budget`), alone
    in its folder (no hw3_helpers.py, no hw3tools), on one thread: the folder, with the notebook as nbconvert saved
    it."""
    import subprocess

    import nbformat

    from hw3tools import notebook as runner

    folder = tmp_path_factory.mktemp("alone")
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    small_budget(nb)
    nbformat.write(nb, folder / "homework3.ipynb")
    env = {**os.environ, "HW3_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                           "--ExecutePreprocessor.timeout=900", "homework3.ipynb"], cwd=folder, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert done.returncode == 0, f"nbconvert --execute failed:\n{done.stderr[-3000:]}"  # say why, not only that
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------------------
# The encoding probe, for a run of the suite with HW3_ENCODING_PROBE=1 (ruff's PLW1514 holds the same statically,
# in `make lint` and tests/test_setup.py): text I/O without encoding= in our files is an error, whether it opens the
# file itself or goes through pathlib. Third-party code is not ours to fix.
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
