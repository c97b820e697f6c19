"""Next year's handout in one command (`python -m hw3tools handout PATH`): the handed-out table and
tests/handed_out.json are regenerated from the handout, what to port is listed, and on today's handout nothing
changes. The drill: a handout whose training cell says another number of epochs, ported by one cell's edit."""
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from project_copy import copy_of_the_project, handout_notebook, load_module, port_a_drilled_handout

import hw3_helpers as hw3
from hw3tools import handout

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT.parent / "shared" / "assignment" / "000_900078325203ea3f.txt"


def test_on_the_handout_the_notebook_was_made_from_it_changes_nothing_and_has_nothing_to_port(tmp_path, capsys):
    project = copy_of_the_project(tmp_path / "project")
    source = handout_notebook(tmp_path / "handout.ipynb")
    before = (project / "hw3_helpers.py").read_bytes()
    assert handout.main([str(source)], root=project) == 0
    said = capsys.readouterr().out
    assert "nothing to port" in said and (project / "hw3_helpers.py").read_bytes() == before


@pytest.mark.skipif(not ASSIGNMENT.exists(), reason="the assignment text lives outside this clone")
def test_on_todays_text_export_the_command_is_a_no_op(tmp_path, capsys):
    project = copy_of_the_project(tmp_path / "project")
    before = {name: (project / name).read_bytes() for name in ("hw3_helpers.py",)}
    assert handout.main([str(ASSIGNMENT)], root=project) == 0
    assert "the handed-out table is as it was" in capsys.readouterr().out
    assert {name: (project / name).read_bytes() for name in before} == before


def drilled(tmp_path, drills=("epochs",)) -> Path:
    project = copy_of_the_project(tmp_path / "project")
    port_a_drilled_handout(project, tmp_path, drills)
    return project


def test_the_drill_a_new_handout_ported_by_one_cells_edit_a_change_passes_every_check_that_depends_on_it(tmp_path):
    """Another number of epochs and another NEXT_PROB, each ported by one cell's edit: on the ported copy, with no
    test or table edited by hand, the handed-out rule passes (the copy's regenerated table, the one fingerprint of
    the handout, which the integrity tests read too), no literal of the new setup is copied outside the handed-out
    cells, and the appendix says the committed study was trained by other code (until `make study` trains it
    again)."""
    from hw3tools import study

    project = copy_of_the_project(tmp_path / "project")
    settings = port_a_drilled_handout(project, tmp_path, ("epochs", "NEXT_PROB"))
    assert settings != study.notebook_settings()
    nb = hw3.read_notebook(project / "homework3.ipynb")
    helpers = load_module(project / "hw3_helpers.py")
    assert helpers.handed_out_intact(nb)[0]
    assert [form for form, _ in hw3.handed_out_cells(nb)] == [form for form, _ in helpers.HANDED_OUT_CELLS]
    assert literals_in(our_texts(project), settings) == []
    import hw3_appendix as hwa

    summary = json.loads((ROOT / "appendix" / "study" / "summary.json").read_text(encoding="utf-8"))
    said = hwa.study_provenance(summary, [c["source"] for c in nb["cells"] if c["cell_type"] == "code"])
    runs = sum(len(config["seeds"]) for config in summary["configs"])
    assert said.startswith(f"{runs} of {runs} runs were trained by other code than the homework's"), said


def test_the_drill_on_the_jump_probability_the_report_and_the_best_possible_follow_the_ported_notebook(tmp_path):
    from test_report import RECORD, render

    from hw3tools import study
    from hw3tools.notebook import load_definitions

    before = study.notebook_settings()
    project = copy_of_the_project(tmp_path / "project")
    after = port_a_drilled_handout(project, tmp_path, ("NEXT_PROB",))
    assert after.next_prob != before.next_prob and after.epochs == before.epochs
    ported = load_definitions(project / "homework3.ipynb")
    # the report quotes the notebook's NEXT_PROB, rendered on the record's numbers
    text = render(RECORD, tmp_path, ported, project / "homework3.ipynb").text
    assert f"{after.next_prob:.0%} of the tokens" in text and f"{before.next_prob:.0%}" not in text
    # the description under the plot names the constant and quotes no value of it
    nb = nbformat.read(project / "homework3.ipynb", as_version=4)
    plot = next(i for i, c in enumerate(nb.cells) if "per_token_acc = calc_per_token_acc(" in c.source)
    description = nb.cells[plot + 1].source
    assert "`NEXT_PROB`" in description and "%" not in description
    assert not re.search(rf"(?<![\d.]){before.next_prob:g}\b", description)
    # the best possible predictor weighs jumps by the notebook's NEXT_PROB: the ported one predicts otherwise
    today = load_definitions()
    np.random.seed(0)
    generators = [today.SeqGen(*today.generate_recursive(today.INITIAL, today.VOCAB_SIZE, after.next_prob))
                  for _ in range(200)]
    tokens = np.array([[next(g) for _ in range(today.SEQ_LEN + 1)] for g in generators])
    assert not np.array_equal(ported.best_possible_accuracy(tokens), today.best_possible_accuracy(tokens))


def test_no_fingerprint_is_written_twice_in_our_code_and_each_entry_of_the_table_is_a_cell_of_the_notebook():
    hashes = []
    for path in [ROOT / "hw3_helpers.py", *sorted((ROOT / "hw3tools").glob("*.py")), *sorted(ROOT.glob("tests/*.py"))]:
        hashes += re.findall(r"\b[0-9a-f]{64}\b", path.read_text(encoding="utf-8"))
    assert len(hashes) == len(set(hashes)), [h for h in set(hashes) if hashes.count(h) > 1]
    nb = hw3.read_notebook(ROOT / "homework3.ipynb")
    assert [form for form, _ in hw3.handed_out_cells(nb)] == [form for form, _ in
                                                                       hw3.HANDED_OUT_CELLS]


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "twenty")


def prescribed_literals(settings=None) -> list[re.Pattern]:
    """The prescribed setup as literals would spell it, built from the values the notebook's cells give (never
    typed here): the epochs, the training set's size and the steps they make (and the equal-compute run's); the
    vocabulary (mod V, V-way, V² pairs, V⁴ hypotheses); the jump probability (as a percentage, or in words);
    the sequence length (length L, ranges ending at L - 1, shapes); the batch, the width, the prescribed model's
    arguments and the learning rate."""
    from hw3tools import study

    settings = settings or study.notebook_settings()
    epochs, sequences, batch = settings.epochs, settings.train_sequences, settings.batch_size
    steps, fresh_steps = epochs * -(-sequences // batch), epochs * sequences // batch
    vocab, length, jump, tests = settings.vocab_size, settings.seq_len, settings.next_prob, settings.test_sequences
    model, lr = settings.model, settings.optimizer_options.get("lr")
    patterns = [
        rf"num_epochs\s*=\s*{epochs}\b", rf"\b{epochs} epochs\b", rf"""epochs["']?\]?\s*==\s*{epochs}\b""",
        rf"\b{steps} (?:training |optimizer )?(?:steps|updates)\b", rf"\b{fresh_steps} (?:training )?steps\b",
        rf"\bsteps\W+{steps}\b", rf"\b{sequences} (?:training )?sequences\b", rf"\bat {sequences}\b",
        rf"\b{sequences:,}\b",
        rf"\bmod {vocab}\b", rf"\b{vocab}-way\b", rf"\btimes in {vocab}\b", rf"\b{vocab} classes\b",
        rf"\b0\.\.{vocab - 1}\b", rf"\b{vocab}⁴",
        rf"\b{vocab ** 4} (?:hypotheses|hidden pairs)\b", rf"\b{vocab ** 2} (?:coefficient )?pairs\b",
        rf"\bof(?: the)? {vocab ** 2}\b", rf"1/{vocab ** 2}\b", rf"\b{vocab ** 2} possibilities\b",
        rf"(?<![\d.]){jump * 100:g} ?% (?:of (?:the )?tokens|(?:that )?jumps?|chance|probability)",
        rf"\bprobability {jump:g}\b",
        rf"\blength {length}\b", rf"·{length}\b", rf"\b\d+ ?[-–] ?{length - 1}\b", rf"\.\.{length - 1}\b",
        rf"\b{length + 1} (?:emitted )?tokens\b", rf"\({tests}, \d+", rf"\bthe {tests} test\b",
        rf"\bbatch(?:es)? (?:of )?{batch}\b", rf"\({batch}, {length}\)",
        rf"\bwidth {model['hidden_dim']}\b", rf"\b{model['n_layers']} blocks of\b",
        rf"n_layers={model['n_layers']}, hidden_dim={model['hidden_dim']}, ff_dim={model['ff_dim']}",
        rf"\blr[ =]+{lr:g}\b"]
    if (1 / jump).is_integer() and 1 / jump < len(NUMBER_WORDS):
        patterns.append(rf"\b(?:one|{NUMBER_WORDS[int(1 / jump) - 1]})(?: \w+)? in {NUMBER_WORDS[int(1 / jump)]}\b")
    return [re.compile(pattern, re.I) for pattern in patterns]


def our_texts(root: Path = ROOT) -> dict[str, str]:
    """Our code and our prose: the notebook's added cells and TODO bodies, the module, the tooling, the tests, the
    benchmark and the guides. The handed-out text (the cells as given, the table of their fingerprints) is the
    handout's; report.md and the figures are what a run wrote from the notebook."""
    texts = {}
    nb = hw3.read_notebook(root / "homework3.ipynb")
    for number, cell in enumerate(nb["cells"], start=1):
        if hw3.is_added(cell):
            texts[f"homework3.ipynb cell {number}"] = cell["source"]
        elif cell["cell_type"] == "code" and hw3.TODO_START in cell["source"]:
            bodies = [part.split(hw3.TODO_END)[0] for part in cell["source"].split(hw3.TODO_START)[1:]]
            texts[f"homework3.ipynb cell {number} (TODO bodies)"] = "\n".join(bodies)
    appendix = hw3.read_notebook(root / "appendix" / "appendix.ipynb")
    for number, cell in enumerate(appendix["cells"], start=1):
        texts[f"appendix.ipynb cell {number}"] = cell["source"]
    for path in [root / "hw3_helpers.py", root / "appendix" / "hw3_appendix.py", *sorted(root.glob("hw3tools/*.py")),
                 *sorted(root.glob("tests/*.py")), *sorted(root.glob("bench/*.py")), root / "README.md",
                 root / "MAINTAINING.md", root / "Makefile"]:
        texts[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return texts


def literals_in(texts: dict[str, str], settings=None) -> list[str]:
    patterns = prescribed_literals(settings)
    return [f"{where}: {match.group(0)!r}" for where, text in texts.items()
            for pattern in patterns for match in pattern.finditer(text)]


def test_no_literal_of_the_prescribed_setup_is_copied_outside_the_handed_out_cells():
    assert literals_in(our_texts()) == []


def test_a_planted_literal_of_each_prescribed_fact_is_found():
    from hw3tools import study

    settings = study.notebook_settings()
    model = settings.model
    planted = {"a docstring": f"trained for {settings.epochs} epochs", "a test": f"num_epochs={settings.epochs}",
               "a label": f"at {settings.train_sequences} sequences",
               "the report": f"a linear function of the two before it (mod {settings.vocab_size})",
               "a description": f"{settings.next_prob:.0%} of the tokens are jumps",
               "a comment": f"# ({settings.test_sequences}, {settings.seq_len + 1}, {settings.vocab_size})",
               "a plot label": f"mean, positions 10-{settings.seq_len - 1}",
               "the README": f"its model has {model['n_layers']} blocks of width {model['hidden_dim']}",
               "the benchmark": f"Transformer(n_layers={model['n_layers']}, hidden_dim={model['hidden_dim']}, "
                                f"ff_dim={model['ff_dim']})",
               "a comment on the schedule": f"# times lr {settings.optimizer_options['lr']}"}
    found = {hit.split(":")[0] for hit in literals_in(planted)}
    assert found == set(planted), set(planted) - found


def test_a_fact_is_found_in_its_context_never_as_a_bare_number_that_happens_to_match():
    from hw3tools import study

    settings = study.notebook_settings()
    steps = settings.epochs * -(-settings.train_sequences // settings.batch_size)
    found = literals_in({"a stated budget": f"the prescribed run takes {steps} training steps",
                         "a test count": f"{steps} passed, 14 skipped", "a time": f"{steps} s in all",
                         "hypotheses": f"all {settings.vocab_size ** 4} hypotheses",
                         "a line number": f"line {settings.vocab_size ** 4} of the log",
                         "a jump share": f"{settings.next_prob:.0%} of the tokens jump",
                         "a share of something else": f"{settings.next_prob:.0%} outside the nucleus"})
    assert {hit.split(":")[0] for hit in found} == {"a stated budget", "hypotheses", "a jump share"}, found
