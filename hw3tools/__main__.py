"""python -m hw3tools COMMAND: the one entry point, with or without make (Windows has none).

This module needs only the standard library, so it runs on the interpreter you start it with: it checks that
interpreter, builds the environment .venv from requirements.txt, then runs the command with .venv's Python
(hw3tools.cli). `make run` is `python3 -m hw3tools run`; on Windows type `py -m hw3tools run`.
It is written for old interpreters too (no syntax newer than 3.6), so that one that is too old gets told what to do.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements.txt"
MINIMUM = (3, 11)
NEWEST_FIRST = ("3.14", "3.13", "3.12", "3.11")
TORCH_PIN = "2.13.0"
TESTED_TORCH = ("2.11", "2.13")  # a torch of these minor versions already installed is reused, not downloaded
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
COMMANDS = {
    "setup": "check the interpreter and build .venv (then nothing else)",
    "run": "run homework3.ipynb, then the appendix, headless: build/, figures/, report.md (HW3_DEVICE, "
           "HW3_NUM_THREADS)",
    "homework": "run homework3.ipynb alone, headless: build/ (its numbers and trained weights), figures/, report.md",
    "appendix": "run appendix/appendix.ipynb on the homework's last run: build/appendix.html, appendix/figures/",
    "test": "unit tests and end-to-end runs of the notebook (pytest arguments may follow)",
    "check": "the grading rubric, rule by rule, for the last run (make run's, or one saved from Jupyter)",
    "zip": "check, then build/hw3_submission.zip for Moodle (both need no .venv)",
    "study": "the appendix's study of variants and levers over seeds (resumes where it stopped): appendix/study/",
    "bench": "speed and memory ratios: build/bench.json",
    "lint": "ruff over the module, tooling, tests, benchmark and notebook",
    "clean": "remove build outputs and caches (keeps .venv, refuses to drop an edited executed notebook)",
    "pins": "check with pip's resolver that requirements.txt installs on Python 3.11-3.14, Linux/macOS/Windows",
    "record": "developers: make the last run the record that the tests hold fresh runs to",
    "measure": "developers: time the fast suite and `make test` (--ci: also .ci/run), into MAINTAINING.md",
    "tolerances": "developers: measure how far runs on other thread counts fall from the record",
    "handout": "maintainers: regenerate what derives from a new handout (PATH: .ipynb or text), list what to port",
}


def version_text(info=None):
    info = info or sys.version_info
    return ".".join(str(part) for part in info[:3])


def reported_version(candidate, timeout=30):
    """(major, minor, micro) that `candidate` prints when it really runs, or None: a name on the PATH can still fail
    (a pyenv shim for a version that pyenv has not selected exits 127 with "command not found"), hang or be broken."""
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys; sys.stdout.write('%d.%d.%d' % tuple(sys.version_info[:3]))"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, encoding="utf-8",
            timeout=timeout)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    try:
        return tuple(int(part) for part in result.stdout.strip().split(".")) if result.returncode == 0 else None
    except ValueError:
        return None


def interpreter_problem(info=None, find=shutil.which, probe=reported_version):
    """None if this interpreter will do; else (a fitting interpreter found on the PATH or None, the message).
    A candidate counts only once `probe` has run it and it said 3.11 or newer, so that a name that merely exists
    on the PATH never replaces hw3's own advice with its error."""
    info = info or sys.version_info
    if tuple(info[:2]) >= MINIMUM:
        return None
    skipped = []
    for version in NEWEST_FIRST:
        found = find("python" + version)
        if not found:
            continue
        reported = probe(found)
        if reported is not None and tuple(reported[:2]) >= MINIMUM:
            return found, (f"Python {version_text(info)} is too old for hw3 (it needs 3.11 or newer); "
                           f"using {found} (Python {version_text(reported)}) instead.")
        skipped.append(f"{found} ({'reports Python ' + version_text(reported) if reported else 'does not run'})")
    return None, (
        f"Python {version_text(info)} is too old for hw3: it needs Python 3.11 or newer, and none that runs was "
        "found on the PATH "
        "(looked for python3.14 ... python3.11" + ("; skipped " + ", ".join(skipped) if skipped else "")
        + "). Nothing was installed.\n"
        "  - Point make at a newer one: make run PYTHON=python3.12 (or any path to a Python >= 3.11).\n"
        "  - macOS: brew install python@3.12, or the installer from https://www.python.org/downloads/\n"
        "  - Ubuntu/Debian: sudo apt install python3.12 python3.12-venv (Ubuntu 22.04: from the deadsnakes PPA)\n"
        "  - Windows: the installer from https://www.python.org/downloads/, then py -3.12 -m hw3tools run")


def venv_python():
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_torch():
    """The torch version this interpreter already has (conda, a lab machine), or None; never imports torch."""
    try:
        from importlib import metadata
        return metadata.version("torch")
    except Exception:
        return None


def torch_plan(choice):
    """How .venv gets torch: ('reuse', version) | ('cpu', None) | ('pin', None)."""
    if choice == "cpu":
        return "cpu", None
    present = installed_torch()
    if choice != "pin" and present and present.split("+")[0].rsplit(".", 1)[0] in TESTED_TORCH:
        return "reuse", present
    return "pin", None


def this_interpreter():
    """(resolved path, version) of the Python running this: what .venv is built from."""
    return os.path.realpath(sys.executable), version_text()


def built_by():
    """(path, version) of the Python that built .venv, from the pyvenv.cfg that venv writes; None if unreadable."""
    try:
        lines = (VENV / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    config = dict(line.split("=", 1) for line in lines if "=" in line)
    config = {key.strip(): value.strip() for key, value in config.items()}
    if "executable" not in config or "version" not in config:
        return None
    return config["executable"], config["version"]  # venv writes os.path.realpath(sys.executable), as we do


def stamp(plan, interpreter=None):
    """.venv's marker for what it was built from: the requirements, the torch choice and the interpreter, so that
    `make run PYTHON=python3.13` does not run a .venv that 3.11 built."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    for name in ("requirements-notebook.txt",):
        digest.update((ROOT / name).read_bytes())
    digest.update(repr(plan).encode("utf-8"))
    digest.update(repr(tuple(interpreter or this_interpreter())).encode("utf-8"))
    return VENV / (".installed-" + digest.hexdigest()[:12])


def run(command, **kwargs):
    print("+ " + " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, **kwargs)


def setup(choice):
    """.venv with requirements.txt installed, built once per requirements, torch choice and interpreter."""
    plan = torch_plan(choice)
    done = stamp(plan)
    if done.exists() and venv_python().exists():
        return
    before = built_by()
    # Packages built for another interpreter's ABI would stay behind in .venv, so a new interpreter starts afresh.
    fresh = VENV.exists() and before != this_interpreter()
    if fresh:
        was = f"Python {before[1]} ({before[0]})" if before else "an interpreter its pyvenv.cfg does not name"
        print(f".venv was built by {was}; building it anew for Python {version_text()} ({this_interpreter()[0]})")
    if plan[0] == "reuse":
        print(f"Reusing torch {plan[1]} from {sys.prefix} (a version hw3 was tested with): .venv sees it through "
              "--system-site-packages; the rest of requirements.txt goes into .venv.")
    run([sys.executable, "-m", "venv"] + (["--clear"] if fresh else [])
        + (["--system-site-packages"] if plan[0] == "reuse" else []) + [VENV])
    pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check"]
    if plan[0] == "cpu":
        print(f"Installing the CPU build of torch {TORCH_PIN} (about 0.2 GB) from {CPU_INDEX}")
        run(pip + ["torch==" + TORCH_PIN, "--index-url", CPU_INDEX])
    requirements = REQUIREMENTS
    if plan[0] == "reuse":
        requirements = VENV / "requirements-without-torch.txt"
        lines = (ROOT / "requirements-notebook.txt").read_text(encoding="utf-8").splitlines()
        lines = [line for line in lines if not line.strip().startswith("torch")]
        lines += [line for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
                  if not line.strip().startswith(("-r", "torch"))]
        requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(pip + ["--quiet", "-r", requirements], cwd=str(ROOT))
    for old in VENV.glob(".installed-*"):
        old.unlink()
    done.touch()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    torch_choice = os.environ.get("HW3_TORCH", "").strip()
    if argv[:1] == ["--torch"] and len(argv) > 1:
        torch_choice, argv = argv[1], argv[2:]
    if argv[:1] == ["--list"]:  # the Makefile's targets
        print("\n".join(COMMANDS))
        return 0
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m hw3tools [--torch cpu|pin] COMMAND [arguments]\n")
        for name, what in COMMANDS.items():
            print(f"  {name:<11} {what}")
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    if torch_choice not in ("", "cpu", "pin"):
        print(f"error: --torch (or TORCH=) must be cpu or pin, got {torch_choice!r}")
        return 2
    problem = interpreter_problem()
    if problem is not None:
        better, message = problem
        print(message, flush=True)
        if better is None:
            return 1
        return subprocess.call([better, "-m", "hw3tools"] + (["--torch", torch_choice] if torch_choice else [])
                               + argv, cwd=str(ROOT))
    if argv[0] == "pins":
        from hw3tools.pins import main as pins_main  # standard library only, no .venv needed
        return pins_main(argv[1:])
    if argv[0] == "handout":  # standard library only, like check and zip
        sys.path.insert(0, str(ROOT))
        from hw3tools.handout import main as handout_main
        return handout_main(argv[1:])
    if argv[0] in ("check", "zip"):
        # They read JSON with the standard library: no .venv to build and no torch, so a run saved from Jupyter is
        # zipped with the Python at hand. Where .venv is already there, its nbconvert adds the HTML reading copy.
        if venv_python().exists() and Path(sys.prefix).resolve() != VENV.resolve():
            return subprocess.call([str(venv_python()), "-m", "hw3tools.check", argv[0]], cwd=str(ROOT))
        sys.path.insert(0, str(ROOT))
        from hw3tools.check import main as check_main
        return check_main(argv[:1])
    builder = built_by()
    if Path(sys.prefix).resolve() == VENV.resolve() and builder and os.path.exists(builder[0]):
        # .venv's own Python sees .venv's torch as one to reuse, which would rebuild .venv around itself: the
        # interpreter that built .venv checks its stamp instead.
        return subprocess.call([builder[0], "-m", "hw3tools"] + (["--torch", torch_choice] if torch_choice else [])
                               + argv, cwd=str(ROOT))
    try:
        setup(torch_choice)
    except subprocess.CalledProcessError as failure:
        print(f"error: building .venv failed ({failure}); fix the cause above and run the command again")
        return 1
    built = built_by() or this_interpreter()
    print(f".venv runs Python {built[1]} ({built[0]})", flush=True)
    if argv[0] == "setup":
        print(f"{VENV} is ready ({venv_python()})")
        return 0
    if argv[0] == "test":
        return subprocess.call([str(venv_python()), "-m", "pytest"] + argv[1:], cwd=str(ROOT))
    if argv[0] == "lint":
        ruff = subprocess.call([str(venv_python()), "-m", "ruff", "check", "hw3_helpers.py", "hw3tools", "tests",
                                "bench", "homework3.ipynb", "appendix"], cwd=str(ROOT))
        lines = subprocess.call([str(venv_python()), "-m", "hw3tools.lint"], cwd=str(ROOT))  # ours within 88
        return ruff or lines
    if argv[0] == "measure":
        return subprocess.call([str(venv_python()), "-m", "hw3tools.timings"] + argv[1:], cwd=str(ROOT))
    if argv[0] == "bench":
        return subprocess.call([str(venv_python()), str(ROOT / "bench" / "bench.py")] + argv[1:], cwd=str(ROOT))
    return subprocess.call([str(venv_python()), "-m", "hw3tools.cli"] + argv, cwd=str(ROOT))


if __name__ == "__main__":
    sys.exit(main())
