"""The HTML export reads on paper and on a narrow screen: long lines of code and of text output wrap there, instead
of being cut at the page edge or scrolling sideways, and no cell's source is changed for it."""
import re
from html.parser import HTMLParser

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from hw3tools.notebook import export_html

LONG_CODE = "total = " + " + ".join(f"value_{i:02d}" for i in range(12)) + "  # 150 chars"
LONG_OUTPUT = "losses by step: " + ", ".join(f"{0.5 + i / 100:.4f}" for i in range(17))  # 150 characters
assert len(LONG_CODE) == len(LONG_OUTPUT) == 150


class Blocks(HTMLParser):
    """Every <pre> of a page: its text and the class lists of its ancestors, innermost last; and the <style>s."""

    def __init__(self):
        super().__init__()
        self.open, self.pres, self.styles, self.style = [], [], [], None

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self.open.append((tag, classes))
        if tag == "pre":
            self.pres.append({"ancestors": [c for _, c in self.open[:-1]], "classes": classes, "text": ""})
        if tag == "style":
            self.style = ""

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:
            pass
        if tag == "style" and self.style is not None:
            self.styles.append(self.style)
            self.style = None

    def handle_data(self, data):
        if self.style is not None:
            self.style += data
        if any(t == "pre" for t, _ in self.open):
            self.pres[-1]["text"] += data


def matches(selector: str, pre: dict) -> bool:
    """Whether a descendant selector of classes ending in `pre` (".a .b pre") picks out this <pre>."""
    *outer, last = selector.split()
    if last != "pre":
        return False
    wanted = [part.lstrip(".") for part in outer]
    for classes in pre["ancestors"]:  # each class in turn on some ancestor, outermost first
        if wanted and wanted[0] in classes:
            wanted.pop(0)
    return not wanted


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    cell = new_code_cell(LONG_CODE, outputs=[new_output("stream", name="stdout", text=LONG_OUTPUT + "\n")])
    nbformat.write(new_notebook(cells=[cell]), folder / "long.ipynb")
    export_html(folder / "long.ipynb", folder / "html" / "long.html", images_from=folder)
    parsed = Blocks()
    parsed.feed((folder / "html" / "long.html").read_text(encoding="utf-8"))
    return parsed


def wrapping_rules(css: str, media: str) -> list[str]:
    """The selectors that a `@media` block matching `media` makes wrap at spaces (pre-wrap, never inside a word)."""
    selectors = []
    for condition, block in re.findall(r"@media([^{]*)\{((?:[^{}]*\{[^{}]*\})*)[^{}]*\}", css):
        if media not in condition:
            continue
        for targets, body in re.findall(r"([^{}]+)\{([^{}]*)\}", block):
            declarations = {k.strip(): v.strip() for k, v in
                            (d.split(":", 1) for d in body.split(";") if ":" in d)}
            if (declarations.get("white-space", "").startswith("pre-wrap")
                    and declarations.get("overflow-wrap", "normal").split()[0] == "normal"
                    and declarations.get("word-break", "normal").split()[0] in ("normal", "keep-all")):
                selectors += [t.strip() for t in targets.split(",")]
    return selectors


def code_and_output(page) -> tuple[dict, dict]:
    [code] = [p for p in page.pres if LONG_CODE in p["text"]]
    [output] = [p for p in page.pres if LONG_OUTPUT in p["text"]]
    return code, output


def test_the_long_lines_are_exported_whole_as_written(page):
    code, output = code_and_output(page)
    assert code["text"].strip() == LONG_CODE  # one line, not broken into several
    assert output["text"].strip() == LONG_OUTPUT


@pytest.mark.parametrize("media", ["print", "max-width: 760px"])
def test_printed_or_on_a_narrow_screen_code_and_output_wrap(page, media):
    css = "\n".join(page.styles)
    selectors = wrapping_rules(css, media)
    assert selectors, f"no @media {media} rule that wraps code"
    code, output = code_and_output(page)
    assert any(matches(s, code) for s in selectors), (selectors, code["ancestors"])
    assert any(matches(s, output) for s in selectors), (selectors, output["ancestors"])


def test_the_wrapping_comes_after_nbconvert_styles_so_it_wins_a_tie(page):
    assert wrapping_rules(page.styles[-1], "print"), "the wrapping style is not the last style sheet of the page"


def test_on_a_wide_screen_code_keeps_its_lines(page):
    css = "\n".join(page.styles)
    outside_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css)
    code, _ = code_and_output(page)
    for targets, body in re.findall(r"([^{}]+)\{([^{}]*)\}", outside_media):
        if "white-space: pre-wrap" in body:
            assert not any(matches(t.strip(), code) for t in targets.split(",")), targets
