"""The runner, exporter and figure saving, on small notebooks made for the purpose."""
import json
import os
import stat
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import hw3_helpers as hw3
from hw3tools import notebook as runner


def write_notebook(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


REPORT_HEADING = "## Your report (min 300 words - max 600 words) (2 points)"


def report_code(text):
    """A report cell as the notebook writes them: code that displays markdown."""
    cell = new_code_cell(f"from IPython.display import Markdown, display\ndisplay(Markdown({text!r}))")
    cell.metadata["tags"] = [hw3.ADDED_TAG, hw3.REPORT_TAG]
    return cell


def test_a_failing_cell_stops_the_run_and_is_named(tmp_path):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("x = 1\nprint('first ran')"),
                            new_code_cell("# second cell\nraise ValueError('boom')"), new_code_cell("print('never')"))
    before = source.read_bytes()
    with pytest.raises(runner.RunFailed) as failure:
        runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    message = str(failure.value)
    assert "cell 2" in message and "# second cell" in message and "ValueError" in message and "boom" in message
    assert source.read_bytes() == before, "the source notebook was modified"
    partial = nbformat.read(tmp_path / "out" / "build" / "homework3.failed.ipynb", as_version=4)
    assert "first ran" in partial.cells[0].outputs[0]["text"]
    assert partial.cells[2].outputs == []
    assert not (tmp_path / "out" / "build" / "homework3.ipynb").exists()


def test_a_hung_cell_is_stopped_by_the_time_limit(tmp_path):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("import time\ntime.sleep(60)"))
    with pytest.raises(runner.RunFailed, match="cell 1"):
        runner.run_notebook(source, tmp_path / "out", cell_timeout=3, log=lambda *a, **k: None)


def test_a_successful_run_writes_notebook_html_and_report(tmp_path):
    source = write_notebook(
        tmp_path / "toy.ipynb",
        new_code_cell("import os\nprint(os.environ['HW3_OUTPUT_DIR'])"),
        new_markdown_cell(REPORT_HEADING),
        report_code("First paragraph of the report, computed: " + "{}"),
        report_code("![a figure](figures/f.png)\n\nSecond."),
    )
    lines = []
    executed = runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: lines.append(a[0]))
    assert lines[0].startswith("[1/3] import os")
    nb = nbformat.read(executed, as_version=4)
    assert str(tmp_path / "out") in nb.cells[0].outputs[0]["text"], "the kernel did not get the output folder"
    html = (tmp_path / "out" / "build" / "homework3.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "First paragraph" in html
    assert "display(Markdown(" not in html, "the HTML shows the report's code instead of only its text"
    assert all(c.metadata["jupyter"]["source_hidden"] for c in nb.cells if hw3.REPORT_TAG in c.metadata.get("tags", []))
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert report == "First paragraph of the report, computed: {}\n\n![a figure](figures/f.png)\n\nSecond.\n"
    assert hw3.linked_images(report) == ["figures/f.png"]
    timings = json.loads((tmp_path / "out" / "build" / "run_timings.json").read_text(encoding="utf-8"))
    assert len(timings["cell_seconds"]) == 3 and timings["total_seconds"] >= timings["cell_seconds"][0]


def test_the_report_is_what_the_kernel_displayed_plus_the_students_own_markdown_cells():
    nb = new_notebook(cells=[new_markdown_cell("Instructions"), new_markdown_cell(REPORT_HEADING),
                             report_code("x"), new_markdown_cell("A paragraph the student added, untagged."),
                             new_code_cell("print('a plot, not prose')"), new_markdown_cell("The check, not report.")])
    nb.cells[2].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "Computed: 0.851."})]
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", name="stdout", text="a plot, not prose\n")]
    nb.cells[5].metadata["tags"] = [hw3.ADDED_TAG, hw3.REPORT_CHECK_TAG]
    assert hw3.report_text(nb) == "Computed: 0.851.\n\nA paragraph the student added, untagged.\n"


def test_progress_bars_keep_their_last_state_and_their_place_between_prints():
    stream = lambda name, text: nbformat.v4.new_output("stream", name=name, text=text)  # noqa: E731
    outputs = [stream("stdout", "0: Avg eval accuracy 0.1\n"),
               stream("stderr", "\r0it [00:00, ?it/s]"), stream("stderr", "\r40it [00:09,  4.1it/s]"),
               stream("stderr", "\r79it [00:19,  4.0it/s]"), stream("stderr", "\r79it [00:19,  4.0it/s]\n"),
               stream("stdout", "0: Avg eval accuracy 0.46\n"), stream("stderr", "\r0it [00:00, ?it/s]"),
               stream("stderr", "\r79it [00:17,  4.5it/s]\n")]
    merged = runner.terminal_streams(outputs)
    assert [(o["name"], o["text"]) for o in merged] == [
        ("stdout", "0: Avg eval accuracy 0.1\n"), ("stderr", "79it [00:19,  4.0it/s]\n"),
        ("stdout", "0: Avg eval accuracy 0.46\n"), ("stderr", "79it [00:17,  4.5it/s]\n")]


def test_a_real_tqdm_loop_leaves_one_line_per_bar_and_the_kernel_prints_no_warnings(tmp_path, capfd):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell(
        "from tqdm import tqdm\nimport time\nfor epoch in range(3):\n"
        "    for i in tqdm(range(50), mininterval=0):\n        time.sleep(0.001)\n    print(f'epoch {epoch} done')"))
    executed = runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    outputs = nbformat.read(executed, as_version=4).cells[0].outputs
    bars = "".join(o["text"] for o in outputs if o["name"] == "stderr")
    assert "\r" not in bars and [line.count("50/50") for line in bars.splitlines()] == [1, 1, 1]
    assert len(outputs) <= 7  # bar, print, bar, print, bar, print (+ a newline that may arrive late)
    assert [o["text"] for o in outputs if o["name"] == "stdout"] == [f"epoch {e} done\n" for e in range(3)]
    assert "without encryption" not in capfd.readouterr().err


def test_an_executed_notebook_edited_by_hand_is_never_overwritten(tmp_path):
    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("x = 1"), new_markdown_cell(REPORT_HEADING))
    executed = runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    assert not runner.edited_since_run(executed)
    nb = nbformat.read(executed, as_version=4)
    nb.cells[1].source += "\n\nA sentence typed into the executed notebook."
    nbformat.write(nb, executed)
    assert runner.edited_since_run(executed)
    with pytest.raises(runner.EditedNotebook, match="edited after it was run"):
        runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    assert "A sentence typed" in executed.read_text(encoding="utf-8")


def test_saved_figures_have_the_same_bytes_every_time(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(hw3.OUTPUT_ENV, str(tmp_path))
    contents = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 4])
        contents.append(hw3.save_figure(fig, "same.png").read_bytes())
        plt.close(fig)
    assert contents[0] == contents[1]


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_file_written_atomically_gets_the_mode_of_a_plain_open_under_the_same_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
        with open(plain, "w", encoding="utf-8") as file:
            file.write("x")
        hw3.write_atomically(atomic, "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert atomic.read_text(encoding="utf-8") == "x" and not list(tmp_path.glob("*.tmp"))


def test_the_report_ends_at_the_next_heading_of_its_level():
    nb = new_notebook(cells=[new_markdown_cell(REPORT_HEADING), report_code("x"),
                             new_markdown_cell("### A sub-heading of the report, still in it"),
                             new_markdown_cell("## Beyond the assignment (added)"),
                             new_markdown_cell("An appendix paragraph, not the report.")])
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "Computed: 0.851."})]
    assert hw3.report_text(nb) == "Computed: 0.851.\n\n### A sub-heading of the report, still in it\n"


def test_the_executed_notebook_carries_what_its_kernel_reports_so_opening_it_changes_nothing(tmp_path):
    import platform

    from jupyter_client.kernelspec import KernelSpecManager

    source = write_notebook(tmp_path / "toy.ipynb", new_code_cell("x = 1"))
    nb = nbformat.read(runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None), as_version=4)
    assert nb.metadata.language_info["name"] == "python"
    assert nb.metadata.language_info["version"] == platform.python_version()  # the Python that ran the kernel
    assert nb.metadata.kernelspec["display_name"] == KernelSpecManager().get_kernel_spec("python3").display_name
    build = tmp_path / "out" / "build"
    plain = tmp_path / "plain"
    plain.write_text("x", encoding="utf-8")
    modes = {stat.S_IMODE(path.stat().st_mode) for path in (build / "homework3.ipynb", build / "homework3.html",
                                                            tmp_path / "out" / "report.md")}
    assert modes == {stat.S_IMODE(plain.stat().st_mode)}
