"""The README is for a student and a grader: short, every command it names exists,
every file it links is there, and every number it quotes is the committed record's or is documented in the
maintainer's guide, where it says where and how it was measured."""
import re
from pathlib import Path

from hw3tools import __main__ as entry
from hw3tools import record

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "MAINTAINING.md").read_text(encoding="utf-8")
RECORD = record.load_json(record.RECORD)


def test_it_stays_short():
    lines = README.splitlines()
    assert len(lines) <= 105 and len(README.split()) <= 1000
    assert max(len(line) for line in lines) <= 120


def test_each_route_is_numbered_steps_that_end_at_the_moodle_upload():
    for route in ("## Colab", "## Jupyter on a laptop", "## `make` on Linux or macOS"):
        section = README.split(route, 1)[1].split("\n## ", 1)[0]
        assert re.search(r"^1\. ", section, re.M) and "Moodle" in section, route
    assert "py -m hw3tools zip" in README.split("## Windows", 1)[1].split("\n## ", 1)[0]
    assert README.index("- **[Colab](#colab)**") < 1200, "the routes are on the first screen"


def test_every_command_it_names_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.search(r"^\.PHONY: (.*)$", makefile, re.M).group(1).split())
    named = re.findall(r"`make ([a-z]+)", README) + re.findall(r"-m hw3tools ([a-z]+)", README)
    assert named and set(named) <= targets | set(entry.COMMANDS)
    assert set(re.findall(r"`make (\w+)", README)) <= targets


def test_every_file_it_links_or_names_is_there():
    linked = re.findall(r"\]\(([^)#:]+)\)", README)
    named = re.findall(r"`((?:[\w-]+/)*[\w-]+\.(?:py|txt|md|json|ipynb))`", README)
    missing = [path for path in linked + named
               if not (ROOT / path).exists()
               and path not in ("hw3_submission.zip", "build/hw3_submission.zip", "metrics.json")]  # the zip's
    assert not missing


def test_every_number_is_the_records_or_documented_in_the_guide():
    accuracies = {f"{RECORD['final_test_accuracy']:.3f}", f"{RECORD['bayes_optimal_accuracy']:.3f}"}
    assert set(re.findall(r"\b0\.\d{3}\b", README)) == accuracies  # the model's and the Bayes ceiling's
    assert f"{RECORD['report_words']} words" in README
    for measured in re.findall(r"\b(\d+(?:\.\d+)?) (?:minutes|GB|hours)\b", README):
        assert re.search(rf"\b{re.escape(measured)} (?:minutes|GB|hours|min)\b", GUIDE), measured
