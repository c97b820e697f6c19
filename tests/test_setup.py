"""The first command works on the machines students have: an interpreter too old is told what to do before
anything is created, make and the route without make (Windows) are one command, and text is UTF-8 everywhere."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw3tools import __main__ as bootstrap

ROOT = Path(__file__).resolve().parents[1]


def test_a_new_enough_python_is_used_as_it_is():
    assert bootstrap.interpreter_problem((3, 11, 0), find=lambda name: None) is None
    assert bootstrap.interpreter_problem((3, 14, 1), find=lambda name: None) is None


def test_an_old_python_with_nothing_better_on_the_path_is_told_the_fix():
    better, message = bootstrap.interpreter_problem((3, 9, 6), find=lambda name: None)
    assert better is None
    assert "Python 3.9.6 is too old" in message and "make run PYTHON=python3.12" in message
    assert "brew install" in message and "apt install" in message and "py -3.12 -m hw3tools run" in message


def test_an_old_python3_hands_over_to_the_newest_fitting_one_on_the_path():
    on_path = {"python3.12": "/usr/bin/python3.12", "python3.11": "/usr/bin/python3.11"}
    better, message = bootstrap.interpreter_problem((3, 10, 12), find=on_path.get)
    assert better == "/usr/bin/python3.12" and "using /usr/bin/python3.12 instead" in message


@pytest.mark.skipif(os.name == "nt" or shutil.which("make") is None, reason="a POSIX shell stand-in and make")
def test_make_run_with_a_python_39_stand_in_stops_at_once_and_creates_nothing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Makefile", "requirements.txt", "requirements-notebook.txt"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "hw3tools", project / "hw3tools", ignore=shutil.ignore_patterns("__pycache__"))
    fake = tmp_path / "reports-3.9"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import collections, sys\n"
        "sys.version_info = collections.namedtuple('version_info', 'major minor micro releaselevel serial')"
        "(3, 9, 6, 'final', 0)\n", encoding="utf-8")
    stand_in = tmp_path / "python3.9"
    stand_in.write_text(f'#!/bin/sh\nPYTHONPATH="{fake}" exec "{sys.executable}" "$@"\n', encoding="utf-8")
    stand_in.chmod(0o755)
    tools = tmp_path / "bin"  # a PATH with make and a shell but no python3.1x to hand over to
    tools.mkdir()
    for tool in ("make", "sh"):
        (tools / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(["make", "run", f"PYTHON={stand_in}"], cwd=project, capture_output=True, text=True,
                            encoding="utf-8", env={"PATH": str(tools), "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode != 0
    assert "Python 3.9.6 is too old for hw3" in result.stdout and "PYTHON=python3.12" in result.stdout
    assert not (project / ".venv").exists()
    assert "pip" not in result.stdout + result.stderr  # stopped before any download


def test_make_is_an_alias_of_the_command_that_windows_users_type():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^HW3 = \$\(PYTHON\) -m hw3tools ", makefile, re.M)
    [(targets, recipe)] = re.findall(r"^([a-z ]+):\n\t(.+)$", makefile, re.M)[-1:]
    assert recipe == "$(HW3) $@"
    assert set(targets.split()) == set(bootstrap.COMMANDS) - {"record", "tolerances"}


def test_the_bootstrap_needs_only_the_standard_library():
    for name in ("__main__.py", "pins.py"):
        source = (ROOT / "hw3tools" / name).read_text(encoding="utf-8")
        imported = set(re.findall(r"^(?:from|import) ([a-z_]+)", source, re.M))
        assert imported <= {"hashlib", "os", "shutil", "subprocess", "sys", "tempfile", "pathlib", "importlib",
                            "hw3tools"}, (name, imported)


def test_requires_python_is_declared_where_tools_look_for_it():
    assert 'requires-python = ">=3.11"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_the_notebooks_own_needs_are_listed_apart_from_the_tooling():
    notebook = (ROOT / "requirements-notebook.txt").read_text(encoding="utf-8")
    pins = {line.split("==")[0] for line in notebook.splitlines() if line and not line.startswith("#")}
    assert pins == {"torch", "numpy", "matplotlib", "tqdm"}
    assert "-r requirements-notebook.txt" in (ROOT / "requirements.txt").read_text(encoding="utf-8")


def test_a_torch_of_a_tested_version_is_reused_and_cpu_is_asked_for_by_name(monkeypatch):
    monkeypatch.setattr(bootstrap, "installed_torch", lambda: "2.11.0+cu126")
    assert bootstrap.torch_plan("") == ("reuse", "2.11.0+cu126")
    assert bootstrap.torch_plan("pin") == ("pin", None)
    assert bootstrap.torch_plan("cpu") == ("cpu", None)
    monkeypatch.setattr(bootstrap, "installed_torch", lambda: "2.3.1")
    assert bootstrap.torch_plan("") == ("pin", None)
    monkeypatch.setattr(bootstrap, "installed_torch", lambda: None)
    assert bootstrap.torch_plan("") == ("pin", None)


def test_a_wrong_torch_choice_is_refused_by_name(capsys):
    assert bootstrap.main(["--torch", "gpu", "run"]) == 2
    assert "--torch (or TORCH=) must be cpu or pin, got 'gpu'" in capsys.readouterr().out


INSIDE_THE_PROBE = pytest.mark.skipif(os.environ.get("HW3_ENCODING_PROBE") == "1", reason="already inside the probe")


@INSIDE_THE_PROBE
def test_the_fast_suite_raises_no_encoding_warning_from_our_files():
    """On Windows, text I/O without encoding= uses the locale's code page; -X warn_default_encoding makes each such
    call warn (Python >= 3.10), and -W error turns the warning into a failure where it happens."""
    result = subprocess.run(
        [sys.executable, "-X", "warn_default_encoding", "-m", "pytest", "-q",
         "-m", "not e2e", "-p", "no:cacheprovider", "-x"],
        cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=900,
        env={**os.environ, "HW3_ENCODING_PROBE": "1"})
    assert result.returncode == 0, result.stdout[-4000:]


@INSIDE_THE_PROBE
def test_the_encoding_probe_catches_our_text_io_without_encoding(monkeypatch):
    import io
    import warnings

    import conftest

    monkeypatch.setattr(io, "text_encoding", io.text_encoding)  # put back after the test
    readme = str(ROOT / "README.md")
    with warnings.catch_warnings():
        conftest._fail_our_default_encodings()
        ours = compile("Path(path).read_text()", str(ROOT / "hw3tools" / "example.py"), "eval")
        with pytest.raises(EncodingWarning, match="without encoding="):
            eval(ours, {"Path": Path, "path": readme})
        fixed = compile("Path(path).read_text(encoding='utf-8')", str(ROOT / "hw3tools" / "example.py"), "eval")
        assert eval(fixed, {"Path": Path, "path": readme})
        theirs = compile("Path(path).read_text()", "/elsewhere/site-packages/lib.py", "eval")
        assert eval(theirs, {"Path": Path, "path": readme})  # not ours to fix


def test_the_bench_reads_peak_memory_on_this_system():
    sys.path.insert(0, str(ROOT / "bench"))
    from memory import peak_kib

    peak = peak_kib()
    if sys.platform.startswith("linux") or sys.platform == "darwin" or os.name == "nt":
        assert isinstance(peak, int) and peak > 10_000  # a Python with torch loaded holds well over 10 MiB
