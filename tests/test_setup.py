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


def runs_as(versions):
    """A probe that answers for stand-in interpreters without starting any: path -> version, None if it fails."""
    return lambda candidate: versions.get(candidate)


def test_an_old_python3_hands_over_to_the_newest_fitting_one_on_the_path():
    on_path = {"python3.12": "/usr/bin/python3.12", "python3.11": "/usr/bin/python3.11"}
    probe = runs_as({"/usr/bin/python3.12": (3, 12, 4), "/usr/bin/python3.11": (3, 11, 9)})
    better, message = bootstrap.interpreter_problem((3, 10, 12), find=on_path.get, probe=probe)
    assert better == "/usr/bin/python3.12" and "using /usr/bin/python3.12 (Python 3.12.4) instead" in message


def test_a_fallback_on_the_path_that_does_not_run_is_skipped_for_the_next_that_does():
    on_path = {"python3.13": "/home/me/.pyenv/shims/python3.13", "python3.12": "/usr/bin/python3.12"}
    probe = runs_as({"/usr/bin/python3.12": (3, 12, 4)})  # the shim exits 127: pyenv has not selected 3.13
    better, message = bootstrap.interpreter_problem((3, 9, 6), find=on_path.get, probe=probe)
    assert better == "/usr/bin/python3.12" and "using /usr/bin/python3.12 (Python 3.12.4) instead" in message


def test_a_fallback_that_reports_a_version_older_than_311_is_skipped():
    on_path = {"python3.12": "/usr/local/bin/python3.12", "python3.11": "/usr/bin/python3.11"}
    probe = runs_as({"/usr/local/bin/python3.12": (3, 10, 12), "/usr/bin/python3.11": (3, 11, 9)})
    better, _ = bootstrap.interpreter_problem((3, 9, 6), find=on_path.get, probe=probe)
    assert better == "/usr/bin/python3.11"


def test_when_no_fallback_on_the_path_works_the_user_gets_hw3s_fixes_and_what_was_skipped():
    on_path = {"python3.13": "/home/me/.pyenv/shims/python3.13", "python3.12": "/usr/local/bin/python3.12"}
    probe = runs_as({"/usr/local/bin/python3.12": (3, 10, 12)})
    better, message = bootstrap.interpreter_problem((3, 9, 6), find=on_path.get, probe=probe)
    assert better is None
    assert "Python 3.9.6 is too old" in message and "make run PYTHON=python3.12" in message
    assert "brew install" in message and "apt install" in message and "py -3.12 -m hw3tools run" in message
    assert "/home/me/.pyenv/shims/python3.13 (does not run)" in message
    assert "/usr/local/bin/python3.12 (reports Python 3.10.12)" in message


def write_stand_in(folder, name, body):
    script = folder / name
    script.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    script.chmod(0o755)
    return script


POSIX_SHELL = pytest.mark.skipif(os.name == "nt", reason="a POSIX shell stand-in")


@POSIX_SHELL
def test_a_real_fallback_that_exits_127_is_skipped_and_a_real_working_one_is_used(tmp_path):
    write_stand_in(tmp_path, "python3.13", 'echo "pyenv: python3.13: command not found" >&2\nexit 127')
    working = write_stand_in(tmp_path, "python3.12", f'exec "{sys.executable}" "$@"')
    better, message = bootstrap.interpreter_problem((3, 9, 6), find=lambda name: shutil.which(name, path=str(tmp_path)))
    assert better == str(working) and f"(Python {bootstrap.version_text()})" in message


@POSIX_SHELL
def test_a_fallback_that_hangs_is_given_up_on(tmp_path):
    hanging = write_stand_in(tmp_path, "python3.13", "exec sleep 30")
    assert bootstrap.reported_version(str(hanging), timeout=0.5) is None


@pytest.mark.skipif(os.name == "nt" or shutil.which("make") is None, reason="a POSIX shell stand-in and make")
def test_make_run_with_a_python_39_stand_in_and_an_unselected_pyenv_shim_stops_at_once_and_creates_nothing(
        tmp_path):
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
    python39 = write_stand_in(tmp_path, "python3.9", f'PYTHONPATH="{fake}" exec "{sys.executable}" "$@"')
    tools = tmp_path / "bin"  # a PATH with make, a shell and only a python3.1x that does not run
    tools.mkdir()
    for tool in ("make", "sh"):
        (tools / tool).symlink_to(shutil.which(tool))
    # what pyenv puts on the PATH for a version that it has installed but not selected
    shim = write_stand_in(tools, "python3.13", 'echo "pyenv: python3.13: command not found" >&2\nexit 127')
    result = subprocess.run(["make", "run", f"PYTHON={python39}"], cwd=project, capture_output=True, text=True,
                            encoding="utf-8", env={"PATH": str(tools), "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode != 0
    assert "Python 3.9.6 is too old for hw3" in result.stdout and "PYTHON=python3.12" in result.stdout
    assert f"skipped {shim} (does not run)" in result.stdout
    assert "command not found" not in result.stdout + result.stderr
    assert not (project / ".venv").exists()
    assert "pip" not in result.stdout + result.stderr  # stopped before any download


def test_make_is_an_alias_of_the_command_that_windows_users_type():
    """The Makefile reads the one list of commands (hw3tools/__main__.py's COMMANDS) and hands each to it."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^HW3 = \$\(PYTHON\) -m hw3tools ", makefile, re.M)
    assert "COMMANDS := $(shell $(PYTHON) -m hw3tools --list)" in makefile
    assert "\n$(COMMANDS):\n\t$(HW3) $@ $(if $(filter handout,$@),$(HANDOUT))\n" in makefile
    listed = subprocess.run([sys.executable, "-m", "hw3tools", "--list"], cwd=ROOT, capture_output=True, text=True,
                            encoding="utf-8")
    assert listed.stdout.split() == list(bootstrap.COMMANDS)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this system (Windows)")
def test_make_lists_every_command_and_hands_a_target_to_the_entry_point():
    done = subprocess.run(["make", "-n", "check", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, encoding="utf-8")
    assert done.returncode == 0 and f"{sys.executable} -m hw3tools  check" in done.stdout, done.stdout + done.stderr
    shown = subprocess.run(["make", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True,
                           encoding="utf-8").stdout
    assert all(f"  {command} " in shown for command in bootstrap.COMMANDS), shown
    handout = subprocess.run(["make", "-n", "handout", "HANDOUT=next.ipynb", f"PYTHON={sys.executable}"], cwd=ROOT,
                             capture_output=True, text=True, encoding="utf-8").stdout
    assert "-m hw3tools  handout next.ipynb" in handout


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


def test_the_venv_stamp_names_the_interpreter_so_another_python_or_version_rebuilds_venv():
    plan = ("pin", None)
    python311 = bootstrap.stamp(plan, ("/usr/bin/python3.11", "3.11.7"))
    assert python311 == bootstrap.stamp(plan, ("/usr/bin/python3.11", "3.11.7"))
    assert python311 != bootstrap.stamp(plan, ("/usr/bin/python3.13", "3.13.0"))
    assert python311 != bootstrap.stamp(plan, ("/usr/bin/python3.11", "3.11.9"))  # upgraded in place
    assert bootstrap.stamp(plan) == bootstrap.stamp(plan, (os.path.realpath(sys.executable), bootstrap.version_text()))


def write_pyvenv_cfg(venv, executable, version):
    venv.mkdir(exist_ok=True)
    (venv / "pyvenv.cfg").write_text(f"home = {os.path.dirname(executable)}\ninclude-system-site-packages = false\n"
                                     f"version = {version}\nexecutable = {executable}\n", encoding="utf-8")


def venv_commands(monkeypatch, venv):
    """The commands setup() would run for a .venv at `venv`, recorded instead of run."""
    commands = []
    monkeypatch.setattr(bootstrap, "VENV", venv)
    monkeypatch.setattr(bootstrap, "run", lambda command, **kwargs: commands.append([str(p) for p in command]))
    bootstrap.setup("pin")
    return [command for command in commands if command[1:3] == ["-m", "venv"]]


def test_a_venv_that_another_python_built_is_cleared_and_one_this_python_built_is_updated(monkeypatch, tmp_path):
    write_pyvenv_cfg(tmp_path / "other", "/usr/bin/python3.13", "3.13.0")
    [build] = venv_commands(monkeypatch, tmp_path / "other")
    assert "--clear" in build
    write_pyvenv_cfg(tmp_path / "same", os.path.realpath(sys.executable), bootstrap.version_text())
    [build] = venv_commands(monkeypatch, tmp_path / "same")
    assert "--clear" not in build


def test_each_command_says_which_python_venv_runs(monkeypatch, tmp_path, capsys):
    write_pyvenv_cfg(tmp_path, "/opt/python/bin/python3.12", "3.12.4")
    monkeypatch.setattr(bootstrap, "VENV", tmp_path)
    monkeypatch.setattr(bootstrap, "setup", lambda choice: None)
    assert bootstrap.main(["setup"]) == 0
    assert ".venv runs Python 3.12.4 (/opt/python/bin/python3.12)\n" in capsys.readouterr().out


def test_venvs_own_python_hands_the_command_to_the_python_that_built_venv_and_rebuilds_nothing(monkeypatch,
                                                                                                 tmp_path):
    builder = tmp_path / "python3.11"
    builder.write_text("", encoding="utf-8")
    write_pyvenv_cfg(tmp_path / ".venv", str(builder), "3.11.7")
    monkeypatch.setattr(bootstrap, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    monkeypatch.setattr(bootstrap, "setup", lambda choice: pytest.fail("setup ran inside .venv"))
    calls = []
    monkeypatch.setattr(bootstrap.subprocess, "call", lambda command, **kwargs: calls.append(command) or 0)
    assert bootstrap.main(["--torch", "cpu", "record"]) == 0
    assert calls == [[str(builder), "-m", "hw3tools", "--torch", "cpu", "record"]]


def test_a_wrong_torch_choice_is_refused_by_name(capsys):
    assert bootstrap.main(["--torch", "gpu", "run"]) == 2
    assert "--torch (or TORCH=) must be cpu or pin, got 'gpu'" in capsys.readouterr().out


INSIDE_THE_PROBE = pytest.mark.skipif(os.environ.get("HW3_ENCODING_PROBE") == "1", reason="already inside the probe")


def test_no_test_reads_what_a_run_rewrites_in_the_working_tree():
    """Students run `make run`, then `make test`: a run rewrites report.md, figures/ and build/ with that machine's
    numbers, so no test holds anything to them (the record is report/record.json, which no run writes; the e2e
    tests run the notebooks into scratch folders)."""
    rewritten = re.compile(r"""ROOT\s*/\s*["'](report\.md|figures|build)["']""")
    for path in sorted((ROOT / "tests").glob("*.py")):
        assert not rewritten.search(path.read_text(encoding="utf-8")), path.name


def test_our_text_io_names_its_encoding_so_windows_reads_and_writes_utf_8():
    """On Windows, text I/O without encoding= uses the locale's code page. ruff's unspecified-encoding rule (a preview
    rule, selected alone in pyproject.toml) finds every open(), Path.read_text and Path.write_text without it in our
    code, as `make lint` runs it; and it finds a planted one."""
    ruff = [sys.executable, "-m", "ruff", "check", "--no-cache", "--preview", "--select", "PLW1514"]
    ours = ["hw3_helpers.py", "hw3tools", "tests", "bench", "appendix/hw3_appendix.py"]
    done = subprocess.run(ruff + ours, cwd=ROOT, capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stdout
    planted = ROOT / "tests" / "__planted_encoding_probe.py"
    try:
        planted.write_text("from pathlib import Path\nPath('x').read_text()\n", encoding="utf-8")
        done = subprocess.run(ruff + [str(planted)], cwd=ROOT, capture_output=True, text=True, encoding="utf-8")
    finally:
        planted.unlink()
    assert done.returncode == 1 and "unspecified-encoding" in done.stdout and "__planted_encoding_probe" in done.stdout


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
