"""The runner, exporter and figure saving, on small notebooks made for the purpose."""
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import hw3_helpers
from hw3tools import notebook as hw3


def write_notebook(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def report_cell(text):
    cell = new_markdown_cell(text)
    cell.metadata["tags"] = [hw3.ADDED_TAG]
    return cell


def test_a_failing_cell_stops_the_run_and_is_named(tmp_path):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("x = 1\nprint('first ran')"),
                            new_code_cell("# second cell\nraise ValueError('boom')"), new_code_cell("print('never')"))
    before = source.read_bytes()
    with pytest.raises(hw3.RunFailed) as failure:
        hw3.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    message = str(failure.value)
    assert "cell 2" in message and "# second cell" in message and "ValueError" in message and "boom" in message
    assert source.read_bytes() == before, "the source notebook was modified"
    partial = nbformat.read(tmp_path / "out" / "build" / "homework3.failed.ipynb", as_version=4)
    assert "first ran" in partial.cells[0].outputs[0]["text"]
    assert partial.cells[2].outputs == []
    assert not (tmp_path / "out" / "build" / "homework3.ipynb").exists()


def test_a_hung_cell_is_stopped_by_the_time_limit(tmp_path):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("import time\ntime.sleep(60)"))
    with pytest.raises(hw3.RunFailed, match="cell 1"):
        hw3.run_notebook(source, tmp_path / "out", cell_timeout=3, log=lambda *a, **k: None)


def test_a_successful_run_writes_notebook_html_and_report(tmp_path):
    source = write_notebook(
        tmp_path / "toy.ipynb",
        new_code_cell("import os\nprint(os.environ['HW3_OUTPUT_DIR'])"),
        new_markdown_cell("## Your report (min 300 words - max 600 words) (2 points)"),
        new_markdown_cell("The assignment's instructions, not part of the report."),
        report_cell("First paragraph of the report."), report_cell("![a figure](figures/f.png)\n\nSecond."),
    )
    lines = []
    executed = hw3.run_notebook(source, tmp_path / "out", log=lambda *a, **k: lines.append(a[0]))
    assert lines[0].startswith("[1/1] import os")
    nb = nbformat.read(executed, as_version=4)
    assert str(tmp_path / "out") in nb.cells[0].outputs[0]["text"], "the kernel did not get the output folder"
    assert (tmp_path / "out" / "build" / "homework3.html").read_text().startswith("<!DOCTYPE html>")
    report = (tmp_path / "out" / "report.md").read_text()
    assert report == "First paragraph of the report.\n\n![a figure](figures/f.png)\n\nSecond.\n"
    assert hw3.linked_images(report) == ["figures/f.png"]
    timings = json.loads((tmp_path / "out" / "build" / "run_timings.json").read_text())
    assert len(timings["cell_seconds"]) == 1 and timings["total_seconds"] >= timings["cell_seconds"][0]


def test_saved_figures_have_the_same_bytes_every_time(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(hw3_helpers.OUTPUT_ENV, str(tmp_path))
    contents = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 4])
        contents.append(hw3_helpers.save_figure(fig, "same.png").read_bytes())
        plt.close(fig)
    assert contents[0] == contents[1]


def test_report_words_leave_out_images_and_link_targets():
    assert hw3.report_words("Greedy decoding (see ![fig](figures/a.png)) picks [the argmax](http://x.y/z).") == 6


def test_a_report_that_cannot_be_rendered_keeps_the_run_and_says_why(tmp_path):
    source = write_notebook(
        tmp_path / "toy.ipynb",
        new_code_cell("import json, os, pathlib\nbuild = pathlib.Path(os.environ['HW3_OUTPUT_DIR']) / 'build'\n"
                      "(build / 'metrics.json').write_text(json.dumps({'final_test_accuracy': 0.9}))"),
        new_markdown_cell("## Your report (min 300 words - max 600 words) (2 points)"), report_cell("Old text."),
    )
    template = tmp_path / "template.md"
    template.write_text("Accuracy {accuracy:.3f}, ceiling {ceiling:.3f}.")  # the toy run records no ceiling
    lines = []
    executed = hw3.run_notebook(source, tmp_path / "out", log=lambda *a, **k: lines.append(a[0]),
                                report_template=template)
    assert executed.exists() and (tmp_path / "out" / "report.md").read_text() == "Old text.\n"
    assert any("not rendered" in line and "bayes_optimal_accuracy" in line for line in lines)
    template.write_text("Accuracy {accuracy:.3f}.")
    executed = hw3.run_notebook(source, tmp_path / "out2", log=lambda *a, **k: None, report_template=template)
    assert (tmp_path / "out2" / "report.md").read_text() == "Accuracy 0.900.\n"
