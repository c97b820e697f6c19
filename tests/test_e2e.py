"""One full headless run of the notebook, as a student leaves it after editing the report, and everything that is
checked on its outputs. The run has a stand-in for Colab's frontend on its kernel's path (tests/colab_standin.py), so
the notebook's last cell does what it does in Colab: reads the running notebook, checks it and downloads the zip."""
import copy
import io
import json
import re
import shutil
import stat
import zipfile

import colab_standin
import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

import hw3_helpers as hw3
from hw3tools import check, record, runs, study
from hw3tools import notebook as runner

pytestmark = pytest.mark.e2e

LINK = "https://colab.research.google.com/drive/1AbC-xyz"
ADDED_SENTENCE = "A sentence I added to the temperature paragraph myself."
ADDED_PARAGRAPH = "A paragraph of my own, in a markdown cell inside the report."
APPENDIX_PARAGRAPH = "A note of my own in the appendix, which is not part of the report."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A copy of the notebook with a student's edits to the report, executed top to bottom into a scratch folder
    (the repository's notebook and outputs stay untouched)."""
    out = tmp_path_factory.mktemp("run")
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    temperature = next(c for c in nb.cells if "**Temperature.**" in c.source)
    temperature.source = temperature.source.replace('""")', f'{ADDED_SENTENCE}\n""")')
    nb.cells.insert(nb.cells.index(temperature) + 1, new_markdown_cell(ADDED_PARAGRAPH))  # untagged, as Jupyter
    appendix = next(c for c in nb.cells if c.source.startswith("## Beyond the assignment"))
    nb.cells.insert(nb.cells.index(appendix) + 1, new_markdown_cell(APPENDIX_PARAGRAPH))
    source = out / "homework3.ipynb"
    nbformat.write(nb, source)
    for name in ("hw3_helpers.py", "study"):  # beside the notebook, as in the repository and the zip
        (shutil.copytree if name == "study" else shutil.copy)(runner.ROOT / name, out / name)
    frontend = tmp_path_factory.mktemp("colab")
    alone = {}
    executed = runner.run_notebook(source, out, env=colab_standin.install(frontend),
                                on_cell_execute=colab_standin.frontend_hook(frontend),
                                then=export_cell_alone_after_the_run(out, frontend, alone))
    return {"out": out, "source": source, "executed": executed, "frontend": frontend, "alone": alone,
            "metrics": json.loads((out / "build" / "metrics.json").read_text(encoding="utf-8"))}


def export_cell_alone_after_the_run(out, frontend, said):
    """What a student does in Colab after Run all, in the same session: paste the link and run the export cell
    alone; change a report cell's code and run the export cell alone; run that report cell again alone, then the
    export cell. What the export cell printed and downloaded each time goes into `said`; the notebook, the zip and
    the downloads of the run itself are left as they were."""
    def then(client, nb):
        kept, zipped = copy.deepcopy(nb.cells), (out / "hw3_submission.zip").read_bytes()
        downloads = colab_standin.downloads(frontend)
        export = next(i for i, c in enumerate(nb.cells) if hw3.is_export_cell(c))

        def export_alone(case):
            before = len(colab_standin.downloads(frontend))
            client.execute_cell(nb.cells[export], export)  # the stand-in hands over the notebook as it stands
            said[case] = ("".join(o.get("text", "") for o in nb.cells[export].outputs),
                          colab_standin.downloads(frontend)[before:])

        next(c for c in nb.cells if hw3.is_link_cell(c)).source = \
            f"{hw3.COLAB_LEAD} [open in Colab]({LINK})"
        export_alone("link pasted")
        said["zip with the link"] = (out / "hw3_submission.zip").read_bytes()
        temperature = next(c for c in nb.cells if "**Temperature.**" in c.source)
        temperature.source = temperature.source.replace(" the ", " a ", 1)
        export_alone("report cell changed")
        client.execute_cell(temperature, nb.cells.index(temperature))
        export_alone("report cell run again alone")
        nb.cells[:] = kept
        (out / "hw3_submission.zip").write_bytes(zipped)
        (frontend / "downloads.txt").write_text("".join(f"{path}\n" for path in downloads), encoding="utf-8")
    return then


def test_the_model_reaches_our_accuracy_target(run):
    assert run["metrics"]["final_test_accuracy"] >= 0.80
    assert len(run["metrics"]["per_position_accuracy"]) == study.notebook_settings().seq_len


EPOCHS = study.notebook_settings().epochs  # as the training cell hands them out


def training_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("model = Transformer("))


def test_the_printed_accuracy_is_the_recorded_one_and_the_reported_one(run):
    nb = nbformat.read(run["executed"], as_version=4)
    printed = re.findall(r"Avg eval accuracy ([0-9.]+)", "".join(o.get("text", "") for o in training_cell(nb).outputs))
    assert len(printed) == EPOCHS + 1  # before training, then after each epoch
    assert float(printed[-1]) == pytest.approx(run["metrics"]["final_test_accuracy"], abs=1e-6)
    report = (run["out"] / "report.md").read_text(encoding="utf-8")
    assert f"model gets {float(printed[-1]):.3f} of the test set's next tokens right" in " ".join(report.split())


def test_the_training_cell_shows_one_progress_line_per_epoch(run):
    outputs = training_cell(nbformat.read(run["executed"], as_version=4)).outputs
    bars = "".join(o["text"] for o in outputs if o.get("name") == "stderr")
    assert "\r" not in bars and len(bars.splitlines()) == EPOCHS, bars
    assert len(outputs) <= 2 * EPOCHS + 4  # a bar and an accuracy print an epoch, not hundreds of fragments


def test_the_model_stays_below_the_bayes_ceiling(run):
    metrics = run["metrics"]
    assert metrics["final_test_accuracy"] <= metrics["bayes_optimal_accuracy"]


def test_the_kv_cache_gives_the_same_tokens(run):
    assert run["metrics"]["kv_cache"]["identical_to_generate"] is True


def test_every_claim_of_the_report_holds_and_the_notebook_says_so(run):
    assert set(run["metrics"]["report_claims"].values()) == {"holds"}
    nb = nbformat.read(run["executed"], as_version=4)
    check_cell = next(c for c in nb.cells
                      if c.cell_type == "code" and hw3.REPORT_CHECK_TAG in c.metadata.get("tags", []))
    shown = " ".join(o["data"]["text/markdown"] for o in check_cell.outputs if o.output_type == "display_data")
    assert f"All {len(run['metrics']['report_claims'])} sentences of the report that depend on the run hold" in shown


def test_the_students_edits_reach_report_md_the_html_and_the_zip(run, tmp_path):
    report = (run["out"] / "report.md").read_text(encoding="utf-8")
    assert ADDED_SENTENCE in report and ADDED_PARAGRAPH in report
    assert report.index(ADDED_SENTENCE) < report.index(ADDED_PARAGRAPH) < report.index("**Per-token accuracy.**")
    assert ADDED_SENTENCE in (run["out"] / "build" / "homework3.html").read_text(encoding="utf-8")
    target = make_zip(run, tmp_path)
    with zipfile.ZipFile(target) as archive:
        assert ADDED_SENTENCE in archive.read("report.md").decode("utf-8")
        assert ADDED_SENTENCE in archive.read("homework3.ipynb").decode("utf-8")


def make_zip(run, tmp_path):
    """`make zip` on a copy of the run's folder: its zip."""
    out = tmp_path / "zipped"
    shutil.copytree(run["out"], out)
    assert check.main(["zip"], out) == 0
    return out / "build" / "hw3_submission.zip"


def test_the_report_stays_within_the_handouts_limits_and_ours(run):
    words = len((run["out"] / "report.md").read_text(encoding="utf-8").split())
    added = len(ADDED_SENTENCE.split()) + len(ADDED_PARAGRAPH.split())
    assert 350 <= words - added <= 500  # ours, as `wc -w report.md` counts; the handout allows 300 to 600
    assert run["metrics"]["report_words"] == words - len(ADDED_PARAGRAPH.split())  # the kernel's count: its cells


def test_the_executed_notebook_passes_the_rubric(run):
    out = run["out"]
    results = check.verdicts(out)
    assert [(name, status) for name, status, _ in results if status != hw3.PASS] == [
        ("a link to the Colab version near the top (deliverable)", hw3.TODO)]


def test_the_report_of_this_run_stands_alone_and_holds_the_report_only(run):
    """On the report this run wrote, not on any file in the working tree."""
    report = (run["out"] / "report.md").read_text(encoding="utf-8")
    heads = ["**Cross-entropy in training.**", "**Generating tokens.**", "**Nucleus sampling against greedy.**",
             "**Temperature.**", "**Per-token accuracy.**", "**Beyond the assignment.**"]
    assert [report.index(head) for head in heads] == sorted(report.index(head) for head in heads)
    assert APPENDIX_PARAGRAPH not in report and "## Beyond the assignment" not in report
    for part in report.split("\n\n"):
        if not part.startswith("**Beyond the assignment.**"):
            assert not re.search(r"\b(bayes\w*|kl|bits?|posterior)\b", part, re.I), part[:60]
    first = next(s for s in re.split(r"(?<=[.;])\s+", " ".join(report.split())) if "rule-consistent" in s)
    assert "could have produced it" in first  # the term is defined where it first appears


def test_the_executed_notebook_opens_as_the_kernel_describes_it(run):
    """What JupyterLab would rewrite on opening (language_info, the kernel's display name) is already there."""
    import platform

    from jupyter_client.kernelspec import KernelSpecManager

    nb = nbformat.read(run["executed"], as_version=4)
    assert nb.metadata.language_info["version"] == platform.python_version()
    assert {"name", "mimetype", "file_extension", "codemirror_mode", "pygments_lexer"} <= set(nb.metadata.language_info)
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert nb.metadata.kernelspec == {"name": "python3", "display_name": spec.display_name, "language": "python"}
    for cell in hw3.report_cells(nb):
        if cell.cell_type == "code":
            assert cell.metadata["jupyter"]["source_hidden"] and cell.metadata["cellView"] == "form"
            assert cell.source.startswith("#@title")


def test_the_run_agrees_with_the_record_within_measured_tolerances(run):
    """Not bit for bit (thread count, CPU, torch and device change the last bits), but within what was measured."""
    tolerances = record.load_json(record.TOLERANCES)
    assert record.outside_tolerance(run["metrics"], record.load_json(record.RECORD), tolerances) == []


def test_the_zip_holds_exactly_the_submission(run, tmp_path):
    out = run["out"]
    target = make_zip(run, tmp_path)
    nb = nbformat.read(run["executed"], as_version=4)
    images = set(hw3.linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
                                   + hw3.report_text(nb)))
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        assert names == {"homework3.ipynb", "homework3.html", "hw3_helpers.py", "report.md", "metrics.json",
                         "study/summary.json"} | images
        html = archive.read("homework3.html").decode("utf-8")  # the grader's reading copy: wraps when printed
        assert hw3.WRAP_CODE_STYLE in html and ADDED_SENTENCE in html and "report(f" not in html
        assert {"figures/sampling.png", "figures/per_position_accuracy.png"} <= images
        assert archive.read("report.md") == (out / "report.md").read_bytes()
        written = json.loads(archive.read("metrics.json"))["written_at"]
        for info in archive.infolist():  # ordinary files, readable by all, dated by the run
            assert stat.S_IMODE(info.external_attr >> 16) == 0o644
            assert info.date_time[:5] == tuple(int(x) for x in re.split(r"[-T:]", written[:16]))


def set_metric(out, key, value):
    path = out / "build" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), key: value}), encoding="utf-8")


def below_plot(nb):
    return nb.cells[next(i for i, c in enumerate(nb.cells) if "per_token_acc = calc_per_token_acc(" in c.source) + 1]


def in_report(nb, cell):
    """Insert a cell of the student's at the end of the report, before the appendix's heading."""
    nb.cells.insert(next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Beyond the assignment")), cell)


PROOF = "the code is what the kernel ran: every code cell once, in order, from a fresh kernel"
CHECK_BREAKERS = {  # rubric rule -> how to break only that rule in a copy of the run (the notebook and its outputs)
    PROOF:  # a report cell's code reworded after the run, not run again
        lambda nb, out: setattr(temperature_cell(nb), "source", temperature_cell(nb).source.replace(" the ", " a ", 1)),
    "[do not modify] cells, embedded tests and given code intact":
        lambda nb, out: setattr(next(c for c in nb.cells if c.source.startswith("#[do not modify]")), "source",
                                "#[do not modify]\nimport torch"),
    "no error output in any cell":  # the last cell before the Moodle zip's, which the rules do not judge
        lambda nb, out: [c for c in nb.cells if c.cell_type == "code"][-2].outputs.append(
            nbformat.v4.new_output("error", ename="E", evalue="x", traceback=[])),
    "all five embedded tests ran and passed":
        lambda nb, out: setattr(next(c for c in nb.cells if "\ntest_nucleus()" in c.source), "execution_count", None),
    "no cell waits for input (Run All goes start to end)":
        lambda nb, out: setattr(next(c for c in nb.cells if c.source.startswith("SEED = 0")), "source",
                                "SEED = int(input('seed? '))"),
    "test accuracy >= 0.80 (ours)": lambda nb, out: set_metric(out, "final_test_accuracy", 0.7),
    "a markdown cell right below the per-token plot describes it":
        lambda nb, out: nb.cells.remove(below_plot(nb)),
    "report has 300-600 words (as wc -w counts)":  # a long paragraph of the student's, inside the report
        lambda nb, out: in_report(nb, new_markdown_cell("word " * 150)),
    "report has its five required elements":
        lambda nb, out: [o["data"].__setitem__("text/markdown", re.sub("(?i)temperature", "heat",
                                                                       o["data"]["text/markdown"]))
                         for c in hw3.report_cells(nb) for o in c.get("outputs", [])
                         if "text/markdown" in o.get("data", {})],
    "every claim of the report holds for this run (as the notebook shows under the report)":
        lambda nb, out: set_metric(out, "report_claims", {"Greedy stays on the rule more often": "does not hold"}),
    "every number in the report is one of this run's or of the handout":  # a typo in the student's own words
        lambda nb, out: in_report(nb, new_markdown_cell("In my run the model reaches 0.331 test accuracy.")),
    "report.md is the executed notebook's report":
        lambda nb, out: (out / "report.md").write_text("something else\n", encoding="utf-8"),
    "every image the notebook links lies in its folder and exists":
        lambda nb, out: (out / "figures" / "sampling.png").unlink(),
    "the notebook, its metrics and its figures come from one run":  # a later run's figure, or Jupyter's
        lambda nb, out: (out / "figures" / "sampling.png").write_bytes(
            (out / "figures" / "per_position_accuracy.png").read_bytes()),
}
ONE_RUN = "the notebook, its metrics and its figures come from one run"  # another metrics.json breaks it too
NUMBERS = "every number in the report is one of this run's or of the handout"
ALSO_BROKEN = {  # rules that cannot break alone
    "test accuracy >= 0.80 (ours)": (ONE_RUN, NUMBERS),  # the report states the accuracy the run had
    "every claim of the report holds for this run (as the notebook shows under the report)": (ONE_RUN,),
    "all five embedded tests ran and passed": (PROOF,),  # a cell that did not run has no count
    "no cell waits for input (Run All goes start to end)": (PROOF,),  # an edit of code: it is not what ran
    "[do not modify] cells, embedded tests and given code intact": (PROOF,),
}


def temperature_cell(nb):
    return next(c for c in nb.cells if "**Temperature.**" in c.source)


def as_if_made_by_make_run(nb, out):
    """`make run`'s copy stamped as the run left it, and homework3.ipynb with the same cells and no outputs."""
    nb.metadata[runs.RUN_KEY] = runs.run_stamp_metadata(nb)
    nbformat.write(nb, out / "build" / "homework3.ipynb")
    source = copy.deepcopy(nb)
    for cell in source.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(source, out / "homework3.ipynb")


@pytest.mark.parametrize("rule", CHECK_BREAKERS)
def test_each_rubric_rule_catches_what_it_is_for(run, tmp_path, rule):
    out = tmp_path / "copy"
    shutil.copytree(run["out"], out)
    nb = nbformat.read(out / "build" / "homework3.ipynb", as_version=4)
    CHECK_BREAKERS[rule](nb, out)
    if rule != "report.md is the executed notebook's report":
        (out / "report.md").write_text(hw3.report_text(nb), encoding="utf-8")  # the export follows the edit
    as_if_made_by_make_run(nb, out)
    results = {name: status for name, status, _ in check.verdicts(out)}
    assert set(results) == {*CHECK_BREAKERS, "test accuracy >= 0.65 (assignment)",
                            "a link to the Colab version near the top (deliverable)"}, "a rule without a breaker"
    assert results.pop(rule) == hw3.FAIL, f"{rule!r} did not fail"
    for also in ALSO_BROKEN.get(rule, ()):
        results.pop(also, None)
    results.pop("a link to the Colab version near the top (deliverable)")
    assert set(results.values()) == {hw3.PASS}, [name for name, status in results.items()
                                                         if status != hw3.PASS]


def test_in_colab_the_last_cell_downloads_the_zip_that_make_zip_builds_checked_by_the_same_rules(run, tmp_path):
    [downloaded] = colab_standin.downloads(run["frontend"])
    assert downloaded == str(run["out"] / "hw3_submission.zip")
    with zipfile.ZipFile(make_zip(run, tmp_path)) as archive:
        members = archive.namelist()
    with zipfile.ZipFile(downloaded) as archive:
        assert sorted(archive.namelist()) == sorted(members)
        report = archive.read("report.md").decode("utf-8")
        zipped = hw3.as_notebook(json.loads(archive.read("homework3.ipynb")))
        nbformat.validate(nbformat.reads(archive.read("homework3.ipynb").decode("utf-8"), as_version=4))
        assert archive.read("metrics.json") == (run["out"] / "build" / "metrics.json").read_bytes()
    assert report == (run["out"] / "report.md").read_text(encoding="utf-8") and ADDED_SENTENCE in report
    executed = hw3.read_notebook(run["executed"])
    before_export = [c for c in executed["cells"] if c["cell_type"] == "code"][:-1]
    zipped_code = [c for c in zipped["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in zipped_code[:-1]] == [c["execution_count"] for c in before_export]
    for zipped_cell, executed_cell in zip(zipped_code[:-1], before_export, strict=True):
        assert len(zipped_cell.get("outputs", [])) == len(executed_cell["outputs"])
    assert zipped_code[-1]["outputs"] == [], "the export cell is still running when it reads the notebook"
    said = "".join(o.get("text", "") for o in executed["cells"][-1]["outputs"])
    assert f"PASS  {PROOF}" in said and "PASS  the notebook, its metrics and its figures come from one run" in said
    assert "TODO  a link to the Colab version near the top (deliverable)" in said and "FAIL" not in said
    assert "still to do before you submit" in said


def test_in_colab_the_link_pasted_then_the_zip_cell_alone_downloads_the_zip_with_the_link(run):
    said, downloaded = run["alone"]["link pasted"]
    assert downloaded == [str(run["out"] / "hw3_submission.zip")] and "FAIL" not in said
    assert f"PASS  a link to the Colab version near the top (deliverable)  ({LINK})" in said
    assert f"PASS  {PROOF}" in said
    with zipfile.ZipFile(io.BytesIO(run["alone"]["zip with the link"])) as archive:
        assert hw3.colab_link(hw3.as_notebook(json.loads(archive.read("homework3.ipynb")))) == LINK


@pytest.mark.parametrize("case", ["report cell changed", "report cell run again alone"])
def test_in_colab_code_changed_or_run_again_alone_after_the_run_downloads_nothing_and_names_the_cell(run, case):
    said, downloaded = run["alone"][case]
    assert downloaded == [] and "no zip written" in said
    failed = [line for line in said.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith(f'FAIL  {PROOF}  (cell ')
    assert '"Report: temperature"' in failed[0] and "Runtime > Restart session and run all" in failed[0]
    assert ("was changed after it ran" if case == "report cell changed" else "ran again or out of order") in failed[0]


def copy_with_link(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run["out"], out, ignore=shutil.ignore_patterns("hw3_submission.zip"))
    nb = nbformat.read(out / "homework3.ipynb", as_version=4)
    link = next(c for c in nb.cells if hw3.COLAB_TAG in c.metadata.get("tags", []))
    link.source = f"{hw3.COLAB_LEAD} [open in Colab]({LINK})"
    return out, nb


def test_a_link_pasted_after_make_run_is_checked_and_zipped_with_no_new_run(run, tmp_path, capsys):
    out, nb = copy_with_link(run, tmp_path)
    nbformat.write(nb, out / "homework3.ipynb")
    executed_before = (out / "build" / "homework3.ipynb").read_bytes()
    assert check.main(["check"], out) == 0
    assert f"PASS  a link to the Colab version near the top (deliverable)  ({LINK})" in capsys.readouterr().out
    assert check.main(["zip"], out) == 0
    assert (out / "build" / "homework3.ipynb").read_bytes() == executed_before, "nothing runs again"
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(out / "build" / "hw3_submission.zip") as archive:
        archive.extractall(unzipped)
    nbformat.validate(nbformat.read(unzipped / "homework3.ipynb", as_version=4))  # opens in Jupyter as it is
    zipped = hw3.read_notebook(unzipped / "homework3.ipynb")
    assert hw3.colab_link(zipped) == LINK and not runs.edited_after_run(zipped)
    results = hw3.check_submission(zipped, (unzipped / "metrics.json").read_bytes(), unzipped,
                                           (unzipped / "report.md").read_text(encoding="utf-8"))
    assert {status for _, status, _ in results} == {hw3.PASS}, [r for r in results if r[1] != hw3.PASS]


def test_after_make_run_a_markdown_edit_in_the_report_is_zipped_and_written_to_report_md(run, tmp_path, capsys):
    out, nb = copy_with_link(run, tmp_path)
    words = "A paragraph of mine, written after the run, with no new run."
    in_report(nb, new_markdown_cell(words))
    nbformat.write(nb, out / "homework3.ipynb")
    assert check.main(["zip"], out) == 0, capsys.readouterr().out
    with zipfile.ZipFile(out / "build" / "hw3_submission.zip") as archive:
        assert words in archive.read("report.md").decode("utf-8")
        assert words in archive.read("homework3.html").decode("utf-8")
    assert words in (out / "report.md").read_text(encoding="utf-8"), "report.md beside the notebook follows"


def test_after_make_run_a_code_edit_asks_for_a_new_run_naming_the_cell(run, tmp_path, capsys):
    out, nb = copy_with_link(run, tmp_path)
    index = nb.cells.index(temperature_cell(nb))
    temperature_cell(nb).source = temperature_cell(nb).source.replace(" the ", " a ", 1)
    nbformat.write(nb, out / "homework3.ipynb")
    assert check.main(["zip"], out) == 1
    said = capsys.readouterr().out
    assert f'FAIL  {PROOF}  (cell {index + 1} "Report: temperature" was changed after it ran' in said
    assert "run `make run` again" in said and not (out / "build" / "hw3_submission.zip").exists()
