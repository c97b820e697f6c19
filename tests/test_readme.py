"""The README is for a student and a newcomer: short, the routes on its first screen, every command it names exists,
every file it names is there, and every number it quotes is the committed record's (or the committed report's word
count) or is documented in the maintainer's guide, which stays short too."""
import re
from pathlib import Path

from hw3tools import __main__ as entry
from hw3tools import record

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "MAINTAINING.md").read_text(encoding="utf-8")
RECORD = record.load_json(record.RECORD)
ROUTES = ("## Colab", "## `make` on Linux or macOS", "## Windows", "## Jupyter on a laptop")


def section(text: str, heading: str) -> str:
    return text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip("# ").lower()).replace(" ", "-")


def test_it_stays_short():
    lines = README.splitlines()
    assert len(lines) <= 105 and len(README.split()) <= 1000
    assert max(len(line) for line in lines) <= 120
    assert len(GUIDE.splitlines()) <= 300, "the maintainer's guide reads in ten minutes"


def test_each_route_is_numbered_steps_that_end_at_the_moodle_upload_and_all_are_on_the_first_screen():
    for route in ROUTES:
        steps = section(README, route)
        assert re.search(r"^1\. ", steps, re.M) and "Moodle" in steps, route
        assert README.index(f"](#{slug(route)})**") < 1500, f"{route}: not among the routes on the first screen"
    assert "py -m hw3tools zip" in section(README, "## Windows")


def test_every_anchor_it_links_is_a_heading():
    headings = {slug(line) for line in README.splitlines() if line.startswith("#")}
    guide_headings = {slug(line) for line in GUIDE.splitlines() if line.startswith("#")}
    assert set(re.findall(r"\]\(#([\w-]+)\)", README)) <= headings
    assert set(re.findall(r"\]\(MAINTAINING\.md#([\w-]+)\)", README)) <= guide_headings


def test_every_command_it_names_exists():
    """`make X` and `python -m hw3tools X` name one of COMMANDS, the one list the Makefile reads."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "COMMANDS := $(shell $(PYTHON) -m hw3tools --list)" in makefile
    assert re.search(r"^\.PHONY: help \$\(COMMANDS\)$", makefile, re.M)
    named = re.findall(r"`make ([a-z]+)", README) + re.findall(r"-m hw3tools ([a-z]+)", README)
    assert named and set(named) <= set(entry.COMMANDS), set(named) - set(entry.COMMANDS)


def test_every_file_it_links_or_names_is_there():
    linked = re.findall(r"\]\(([^)#:]+)\)", README)
    named = re.findall(r"`((?:[\w-]+/)*[\w-]+\.(?:py|txt|md|json|ipynb|png))`", README)
    missing = [path for path in linked + named
               if not (ROOT / path).exists() and path != "metrics.json"]  # the zip's, from build/
    assert not missing


def test_every_accuracy_is_the_records():
    accuracies = {f"{RECORD['final_test_accuracy']:.3f}", f"{RECORD['best_possible_accuracy']:.3f}"}
    assert set(re.findall(r"\b0\.\d{3}\b", README)) == accuracies  # the model's and the best possible


def test_the_word_count_is_the_record_runs_report():
    """`record` writes the committed report.md's word count into the record (it refuses a report.md that is not
    the recorded run's), so the README's count is the committed report's."""
    assert f"a report of {RECORD['report_words']} words" in README


def test_every_other_figure_is_documented_in_the_guide():
    for measured in re.findall(r"\b(\d+(?:\.\d+)?) (?:minutes|GB|hours)\b", README):
        assert re.search(rf"\b{re.escape(measured)} (?:minutes|GB|hours|min)\b", GUIDE), measured
