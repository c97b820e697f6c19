"""Rubric rules that read a notebook's text: prompts that would stop Run All, the Colab link, the plot's
description, the word count."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import hw3_helpers as hw3


def test_calls_that_wait_for_a_person_are_found_by_name_and_line():
    assert hw3.prompts_in("x = 1\nseed = int(input('seed? '))") == ["input() on line 2"]
    assert hw3.prompts_in("from google.colab import files\nfiles.upload()") == ["upload() on line 2"]
    assert hw3.prompts_in("import getpass\ngetpass.getpass()") == ["getpass() on line 2"]
    assert hw3.prompts_in("%matplotlib inline\nprint('input')\ninputs = [1]") == []


def test_the_colab_link_is_read_from_its_cell():
    cell = new_markdown_cell("**Colab version of this notebook:** *(not shared yet)*")
    cell.metadata["tags"] = ["added", hw3.COLAB_TAG]
    nb = new_notebook(cells=[cell])
    assert hw3.colab_link(nb) is None
    cell.source = "**Colab version of this notebook:** https://colab.research.google.com/drive/1AbC-xyz"
    assert hw3.colab_link(nb) == "https://colab.research.google.com/drive/1AbC-xyz"
    cell.source = "**Colab version:** [open](https://colab.research.google.com/drive/1AbC-xyz)."
    assert hw3.colab_link(nb) == "https://colab.research.google.com/drive/1AbC-xyz"


def test_the_plot_description_is_the_markdown_cell_right_below_the_plot_and_not_a_heading():
    plot = new_code_cell("per_token_acc = calc_per_token_acc(model, TEST_LOADER)\nplt.show()")
    nb = new_notebook(cells=[plot, new_markdown_cell("Accuracy climbs over the first tokens because ...")])
    assert hw3.plot_description(nb).startswith("Accuracy climbs")
    nb.cells[1] = new_markdown_cell("## Beyond the assignment\n\nA section, not a description.")
    assert hw3.plot_description(nb) is None
    nb.cells[1] = new_code_cell("print(1)")
    assert hw3.plot_description(nb) is None
    assert hw3.plot_description(nbformat.v4.new_notebook(cells=[plot])) is None


def test_words_are_counted_as_wc_counts_them():
    assert hw3.words("Greedy (see ![a caption](figures/a.png)) picks the argmax.\n\nNext.") == 8
