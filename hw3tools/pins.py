"""python -m hw3tools pins: does requirements.txt install on the machines students use? pip's resolver answers
for each Python (3.11-3.14) and platform (Linux x86_64, macOS arm64, Windows x86_64) without installing anything;
it downloads each wheel's metadata from PyPI, so it needs the network and is not part of `make test`.

Standard library only (it runs before .venv exists). Written for old interpreters too, like __main__.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
PLATFORMS = {  # what pip may match for each: the tags that the wheels of our pins carry
    "Linux x86_64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                     "manylinux2014_x86_64", "linux_x86_64"),
    "macOS arm64 (Apple silicon)": ("macosx_14_0_arm64", "macosx_11_0_arm64", "macosx_10_13_universal2",
                                    "macosx_10_9_universal2"),
    "Windows x86_64": ("win_amd64",),
}


def resolve(python, platforms, requirements):
    """(True, '') if every pin has a wheel for that Python and platform, else (False, pip's last error line)."""
    with tempfile.TemporaryDirectory() as target:
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--only-binary=:all:",
                   "--ignore-installed", "--disable-pip-version-check", "--quiet", "--target", target,
                   "--python-version", python, "-r", str(requirements)]
        for platform in platforms:
            command += ["--platform", platform]
        result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                                cwd=str(ROOT))
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    return result.returncode == 0, (errors[-1] if errors else result.stderr.strip()[-300:])


def main(argv=None):
    requirements = ROOT / "requirements.txt"
    print(f"pip's resolver on {requirements.name} (wheels only, nothing installed):")
    failures = 0
    for platform, tags in PLATFORMS.items():
        for python in PYTHONS:
            ok, why = resolve(python, tags, requirements)
            failures += not ok
            print(f"  Python {python:<5} {platform:<28} {'resolves' if ok else 'FAILS: ' + why}", flush=True)
    print("all resolve" if not failures else f"{failures} combinations fail")
    return 1 if failures else 0
