"""`python -m hw3tools measure`'s table: each row it measured with the best and the worst of its runs, the rows it did
not measure kept as the guide had them, and a bad --repeat refused before anything runs."""
import pytest

from hw3tools import timings

FAST = "the fast suite (`-m \"not e2e\"`)"
WHOLE = "`make test` (the whole suite)"


def test_one_run_is_shown_as_its_seconds_several_as_the_best_and_the_worst():
    assert timings.seconds_text([43.4]) == "43 s"
    assert timings.seconds_text([50.2, 43.4, 46.0]) == "best 43 s, worst 50 s of 3 runs"


def test_repeated_keeps_every_duration_and_the_fastest_runs_summary():
    runs = iter([(50.0, "450 passed in 45.0s"), (43.0, "450 passed in 38.7s")])
    assert timings.repeated(lambda: next(runs), 2) == ([50.0, 43.0], "450 passed in 38.7s")


def test_the_table_writes_what_was_measured_and_keeps_the_other_rows():
    kept = f"| {WHOLE} | <= 300 s | before | 303 s (an earlier day) | 498 passed |"
    text = timings.table({FAST: ([50.2, 43.4], "451 passed in 38.67s")}, {WHOLE: kept})
    [fast] = [line for line in text.splitlines() if line.startswith(f"| {FAST}")]
    assert "| best 43 s, worst 50 s of 2 runs (" in fast and fast.endswith("| 451 passed in 38.67s |")
    assert kept in text.splitlines()
    assert "| `.ci/run` on a fresh clone | <= 600 s | 851-1,020 s | not measured yet | |" in text


def test_a_repeat_below_one_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        timings.main(["--repeat", "0"])
    assert "--repeat must be a whole number >= 1, got 0" in capsys.readouterr().err
