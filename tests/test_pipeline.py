"""The runner, exporter and what a run saves (its figures, its numbers and its weights), on small notebooks and a
small model made for the purpose."""
import ast
import io
import json
import os
import stat
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
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
    source = write_notebook(tmp_path / "homework3.ipynb", new_code_cell("x = 1\nprint('first ran')"),
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
    source = write_notebook(tmp_path / "homework3.ipynb", new_code_cell("import time\ntime.sleep(60)"))
    with pytest.raises(runner.RunFailed, match="cell 1"):
        runner.run_notebook(source, tmp_path / "out", cell_timeout=1, log=lambda *a, **k: None)


def test_a_successful_run_writes_notebook_html_and_report(tmp_path):
    source = write_notebook(
        tmp_path / "homework3.ipynb",
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
    timings = json.loads((tmp_path / "out" / "build" / "homework3_timings.json").read_text(encoding="utf-8"))
    assert len(timings["cell_seconds"]) == 3 and timings["total_seconds"] >= timings["cell_seconds"][0]


def test_a_notebook_without_a_report_writes_its_own_outputs_by_its_name_and_no_report_md(tmp_path):
    """The appendix's run: build/appendix.ipynb, .html and _timings.json, beside the homework's, and no report.md
    (which is the homework's report)."""
    source = write_notebook(tmp_path / "appendix.ipynb", new_markdown_cell("# An appendix"),
                            new_code_cell("print('analysed')"))
    executed = runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    build = tmp_path / "out" / "build"
    assert executed == build / "appendix.ipynb"
    assert {path.name for path in build.iterdir()} == {"appendix.ipynb", "appendix.html", "appendix_timings.json"}
    assert not (tmp_path / "out" / "report.md").exists()


def test_the_report_is_what_the_kernel_displayed_plus_the_students_own_markdown_cells():
    nb = new_notebook(cells=[new_markdown_cell("Instructions"), new_markdown_cell(REPORT_HEADING),
                             report_code("x"), new_markdown_cell("A paragraph the student added, untagged."),
                             new_code_cell("print('a plot, not prose')"),
                             new_markdown_cell("## Saving the run, and the Moodle zip (added)"),
                             new_code_cell("print('saved')"), new_markdown_cell("Not the report.")])
    nb.cells[2].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "Computed: 0.851."})]
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", name="stdout", text="a plot, not prose\n")]
    nb.cells[6].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "Saved: not prose."})]
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
    source = write_notebook(tmp_path / "homework3.ipynb", new_code_cell(
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
    source = write_notebook(tmp_path / "homework3.ipynb", new_code_cell("x = 1"), new_markdown_cell(REPORT_HEADING))
    executed = runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    assert not runner.edited_since_run(executed)
    nb = nbformat.read(executed, as_version=4)
    nb.cells[1].source += "\n\nA sentence typed into the executed notebook."
    nbformat.write(nb, executed)
    assert runner.edited_since_run(executed)
    with pytest.raises(runner.EditedNotebook, match="edited after it was run"):
        runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None)
    assert "A sentence typed" in executed.read_text(encoding="utf-8")


def savefig_calls(notebook=runner.NOTEBOOK) -> list[ast.Call]:
    nb = nbformat.read(notebook, as_version=4)
    code = "\n".join(line for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()
                     if not line.lstrip().startswith("%"))
    return [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "savefig"]


def test_the_notebooks_figures_have_the_same_bytes_every_time(tmp_path):
    """Each figure the notebook saves leaves out matplotlib's version stamp, so one run's figure is byte for byte
    what the same run gives again (the rubric fingerprints them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = savefig_calls()
    assert {ast.unparse(call.args[0]) for call in calls} == {"FIGURES / 'sampling.png'",
                                                            "FIGURES / 'per_position_accuracy.png'"}
    for call in calls:
        options = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
        assert options["metadata"] == {"Software": None}, ast.unparse(call)
        contents = []
        for name in ("first.png", "second.png"):
            fig, ax = plt.subplots()
            ax.plot([0, 1, 4])
            fig.savefig(tmp_path / name, **options)
            plt.close(fig)
            contents.append((tmp_path / name).read_bytes())
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
                             new_markdown_cell("## Saving the run, and the Moodle zip (added)"),
                             new_markdown_cell("A paragraph under the run's numbers, not the report.")])
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "Computed: 0.851."})]
    assert hw3.report_text(nb) == "Computed: 0.851.\n\n### A sub-heading of the report, still in it\n"


def test_the_executed_notebook_carries_what_its_kernel_reports_so_opening_it_changes_nothing(tmp_path):
    import platform

    from jupyter_client.kernelspec import KernelSpecManager

    source = write_notebook(tmp_path / "homework3.ipynb", new_code_cell("x = 1"), new_markdown_cell(REPORT_HEADING),
                            report_code("A report."))
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


def test_save_run_writes_the_weights_whose_sha256_metrics_json_holds_and_torch_reads_them_back(hw, tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv(hw3.OUTPUT_ENV, str(tmp_path))
    model = hw.Transformer(vocab_size=7, n_layers=1, hidden_dim=8, ff_dim=16, num_heads=2, head_dim=4)
    model.training_log = {"step_loss": [2.0, 1.5], "epoch_loss": [1.75]}
    np.random.seed(0)
    generators = {hw.SeqGen(*hw.generate_recursive(2, 7, 0.1)) for _ in range(5)}
    test_tokens, prompt_tokens = torch.randint(0, 7, (4, 9)), torch.randint(0, 7, (6, 5))
    samples = {"greedy": np.zeros((6, 3), dtype=np.int64), (1.0, 0.9): np.ones((6, 3), dtype=np.int64)}
    run_id = hw3.save_run(model, {"final_test_accuracy": 0.5}, test_tokens=test_tokens, generators=generators,
                          prompt_tokens=prompt_tokens, samples=samples, train_sequences=100)
    weights, metrics = (tmp_path / "build" / "model.pt").read_bytes(), tmp_path / "build" / "metrics.json"
    assert run_id == hw3.file_digest(metrics.read_bytes())[:12]
    numbers = json.loads(metrics.read_text(encoding="utf-8"))
    assert numbers["weights"] == {"path": hw3.WEIGHTS, "sha256": hw3.file_digest(weights)}
    assert numbers["final_test_accuracy"] == 0.5 and hw3.KERNEL_RAN in numbers
    saved = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    assert set(saved) == {"state_dict", "training_log", "test_tokens", "generators", "prompt_tokens", "samples",
                          "train_sequences"}
    again = hw.Transformer(vocab_size=7, n_layers=1, hidden_dim=8, ff_dim=16, num_heads=2, head_dim=4)
    again.load_state_dict(saved["state_dict"])
    x = torch.randint(0, 7, (2, 6))
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert saved["training_log"] == model.training_log and saved["train_sequences"] == 100
    assert torch.equal(saved["test_tokens"], test_tokens) and torch.equal(saved["prompt_tokens"], prompt_tokens)
    rows = sorted([*map(int, g.initial), *map(int, g.coeffs)] for g in generators)
    assert saved["generators"].tolist() == rows  # initial values, then coefficients, sorted
    assert set(saved["samples"]) == {"greedy", "t=1.0, top_p=0.9"}
    assert saved["samples"]["t=1.0, top_p=0.9"].tolist() == samples[1.0, 0.9].tolist()
