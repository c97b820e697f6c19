"""The HTML reading copy (hw3_helpers.notebook_html) printed on US Letter: no word is broken across lines, a line of
88 characters (our code's limit) and the notebook's printouts fit the page at the print font, tables' columns are
padded and wrap at spaces only, and the formulas render with no network (MathML, where latex2mathml is installed;
MathJax from its CDN, as before, where it is not). Small notebooks built here; nothing is run."""
import re
import sys

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import hw3_helpers as hw3

CODE_88 = "total_loss = first_component_of_the_loss + second_component_of_the_loss + weight * penal"
PRINTOUT = ("per head (0-3): the offset it attends to most / its share of attention beyond offset 8, "
            "blocks")
assert len(CODE_88) == 88 and len(PRINTOUT) == 94  # as wide as a tabular printout of ours may be

TABLE = ("| configuration | parameters | vs dense, same seeds |\n|---|--:|--:|\n"
         "| MoE, 4 experts top-2 | 461k | +0.005±0.001 |\n")
INLINE = r"$a_1 * b_2 * \text{head\_dim}$"  # markdown first would read _..._ and *...* as emphasis
DISPLAY = r"$$\mathit{result} = \mathit{softmax}\left(\frac{Q K^T}{\sqrt{d_k}}\right) V$$"
MATHJAX_CDN = "cdnjs.cloudflare.com/ajax/libs/mathjax"

# What Chromium gives code and printouts on a Letter page (default margins, lab template, measured with
# ../shared/tools/look-at-html): the code box 592 px wide, the output box 604 px. nbconvert's code font is 13 px;
# DejaVu Sans Mono and Menlo advance 0.602 em a character (Consolas less).
CODE_BOX_PX, OUTPUT_BOX_PX, CODE_FONT_PX, ADVANCE_EM = 592, 604, 13, 0.602


def notebook(*cells):
    return new_notebook(cells=list(cells), metadata={"language_info": {"name": "python"}})


def page(tmp_path, *cells) -> str:
    html = hw3.notebook_html(notebook(*cells), tmp_path)
    assert html is not None
    return html


@pytest.fixture
def printed(tmp_path):
    """A page with each thing the grader prints: a long code line, a long printout, a table, formulas."""
    code = new_code_cell(CODE_88, execution_count=1, outputs=[
        new_output("stream", name="stdout", text=PRINTOUT + "\n"),
        new_output("display_data", data={"text/markdown": TABLE, "text/plain": "<Markdown>"})])
    return page(tmp_path, new_markdown_cell(f"The sum {INLINE} is small.\n\n{DISPLAY}\n\n{TABLE}"), code)


@pytest.fixture
def without_latex2mathml(monkeypatch):
    """This Python as Colab's or a student's: `import latex2mathml` raises ImportError (and the exporter, built once
    per process, is built again without it, and once more after)."""
    monkeypatch.setitem(sys.modules, "latex2mathml", None)
    monkeypatch.setitem(sys.modules, "latex2mathml.converter", None)
    hw3._reading_copy_exporter.cache_clear()
    yield
    hw3._reading_copy_exporter.cache_clear()


def rules(css: str, media: str | None) -> list[tuple[str, dict[str, str]]]:
    """(selector, declarations) of the rules inside `@media` blocks whose condition names `media`, or of the rules
    outside any @media where `media` is None."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    blocks = re.findall(r"@media([^{]*)\{((?:[^{}]*\{[^{}]*\})*)[^{}]*\}", css)
    if media is None:
        texts = [re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css)]
    else:
        texts = [block for condition, block in blocks if media in condition]
    found = []
    for text in texts:
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
            declarations = {k.strip(): v.strip() for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d)}
            found += [(s.strip(), declarations) for s in selectors.split(",")]
    return found


def declared(css: str, media: str | None, selector: str) -> dict[str, str]:
    merged = {}
    for s, declarations in rules(css, media):
        if s == selector:
            merged.update(declarations)
    assert merged, f"no rule for {selector!r} in @media {media}"
    return merged


def our_style(html: str) -> str:
    """The style sheet notebook_html appends: the last in the head, so that it wins over nbconvert's."""
    return re.findall(r"<style[^>]*>(.*?)</style>", html.split("</head>")[0], re.DOTALL)[-1]


def characters_fit(font_size: str, box_px: int) -> int:
    return int(box_px / (CODE_FONT_PX * float(font_size.rstrip("%")) / 100 * ADVANCE_EM))


OUTPUT_PRE = ".jp-OutputArea-output pre"
CODE_PRE = ".jp-InputArea-editor .highlight pre"
PRINTED_CODE_PRE = ".jp-InputArea-editor .cm-editor.cm-s-jupyter .highlight pre"


def test_no_style_lets_a_word_break_across_lines(printed):
    assert our_style(printed) == hw3.WRAP_CODE_STYLE.removeprefix("<style>").removesuffix("</style>\n")
    assert "anywhere" not in hw3.WRAP_CODE_STYLE and "break-all" not in hw3.WRAP_CODE_STYLE


@pytest.mark.parametrize("media", ["print", "max-width: 760px"])
@pytest.mark.parametrize("selector", [CODE_PRE, OUTPUT_PRE])
def test_printed_or_narrow_code_and_printouts_wrap_at_spaces_only(printed, media, selector):
    rule = declared(our_style(printed), media, selector)
    assert rule["white-space"] == "pre-wrap"
    # nbconvert's lab styles give printouts word-break: break-all; ours, later in the page, must undo it
    assert rule["overflow-wrap"] == "normal" and rule["word-break"] == "normal"
    assert rule["overflow"] == "visible"  # overflow-y: auto would turn overflow-x: visible into a scroll bar


@pytest.mark.parametrize("media", ["print", "max-width: 760px"])
def test_a_printed_output_stays_inside_its_row_beside_the_prompt(printed, media):
    """lab lays an output out as a table cell of width 100% beside the prompt's cell; made a block (above), 100% is
    the whole row's width, and a long printout ran past the page's edge by the prompt's width, clipped there."""
    rule = declared(our_style(printed), media, ".jp-OutputArea-output")
    assert rule["display"] == "block" and rule["width"] == "auto"


def test_a_line_of_88_characters_fits_the_printed_page(printed):
    font = declared(our_style(printed), "print", PRINTED_CODE_PRE)["font-size"]
    assert characters_fit(font, CODE_BOX_PX) >= 88, font


def test_the_notebooks_widest_tabular_printout_fits_the_printed_page(printed):
    font = declared(our_style(printed), "print", OUTPUT_PRE)["font-size"]
    assert characters_fit(font, OUTPUT_BOX_PX) >= len(PRINTOUT), font


def test_long_lines_are_exported_whole_as_written(printed):
    assert CODE_88.replace(" ", "") in re.sub(r"<[^>]+>|\s", "", printed)  # the code, highlighted into spans
    assert PRINTOUT in printed


@pytest.mark.parametrize("media", ["print", "max-width: 760px"])
def test_table_columns_are_padded_sized_by_content_and_wrap_at_spaces(printed, media):
    css = our_style(printed)
    table = declared(css, media, ".jp-RenderedHTMLCommon table")
    assert table["table-layout"] == "auto"  # lab's fixed layout let words run into the next column
    for selector in (".jp-RenderedHTMLCommon td", ".jp-RenderedHTMLCommon th"):
        cell = declared(css, media, selector)
        horizontal = cell["padding"].split()[1 if len(cell["padding"].split()) > 1 else 0]
        assert float(horizontal.removesuffix("px")) >= 4, cell["padding"]
        assert cell["white-space"] == "normal"
        assert cell["overflow-wrap"] == "normal" and cell["word-break"] == "normal"
    assert printed.count("<table") == 2 and "+0.005±0.001" in printed


def test_formulas_become_mathml_and_no_mathjax_is_loaded(printed):
    pytest.importorskip("latex2mathml")
    assert printed.count("<math") == 2
    assert re.search(r'<math display="block" xmlns="http://www.w3.org/1998/Math/MathML">.*<mfrac>', printed)
    assert MATHJAX_CDN not in printed and "MathJax.Hub" not in printed
    assert "$" not in re.sub(r"<(script|style)[^>]*>.*?</\1>", "", printed, flags=re.DOTALL)


def test_math_is_converted_before_markdown_can_mangle_it(printed):
    pytest.importorskip("latex2mathml")
    assert "<em>" not in printed and "<strong>" not in printed  # a_1 * b_2 * ...: no emphasis
    assert "<msub><mi>a</mi><mn>1</mn></msub><mo>*</mo><msub><mi>b</mi><mn>2</mn></msub>" in printed
    assert "<mtext>head_dim</mtext>" in printed  # \text{head\_dim}: the underscore, not its escape
    assert '<mi style="font-style: italic">softmax</mi>' in printed  # \mathit{softmax}: one italic word


def test_without_latex2mathml_the_formulas_are_left_to_mathjax_from_its_cdn(tmp_path, without_latex2mathml):
    html = page(tmp_path, new_markdown_cell(f"The sum {INLINE} is small.\n\n{DISPLAY}"))
    assert "<math" not in html
    assert MATHJAX_CDN in html and "MathJax.Hub" in html
    assert r"$a_1 * b_2 * \text{head\_dim}$" in html and "$$" in html  # the LaTeX as MathJax reads it
    again = page(tmp_path, new_markdown_cell(f"The sum {INLINE} again."))  # the exporter kept for the process
    assert "<math" not in again and MATHJAX_CDN in again


def test_a_formula_latex2mathml_cannot_convert_stays_latex_and_keeps_mathjax(tmp_path):
    pytest.importorskip("latex2mathml")
    html = page(tmp_path, new_markdown_cell(r"Known $x_1$, unknown $\notacommand{y}$."))
    assert html.count("<math") == 1
    assert r"$\notacommand{y}$" in html and MATHJAX_CDN in html
    # the exporter is built once per process: the next page, all of whose formulas convert, loads no MathJax
    html = page(tmp_path, new_markdown_cell(r"Known $x_1$ only."))
    assert html.count("<math") == 1 and MATHJAX_CDN not in html


def test_latex_outputs_keep_mathjax(tmp_path):
    pytest.importorskip("latex2mathml")
    output = new_output("display_data", data={"text/latex": r"$\frac{1}{2}$", "text/plain": "1/2"})
    html = page(tmp_path, new_markdown_cell("$x$"), new_code_cell("half", execution_count=1, outputs=[output]))
    assert MATHJAX_CDN in html


def test_fonts_cover_symbols_and_emoji_on_windows_macos_and_linux(printed):
    root = declared(our_style(printed), None, ":root")
    for variable in ("--jp-content-font-family", "--jp-code-font-family"):
        stack = root[variable]
        for font in ("DejaVu Sans", "Segoe UI Symbol", "Segoe UI Emoji", "Apple Color Emoji", "Noto Color Emoji"):
            assert f"'{font}'" in stack, (variable, font)
    assert "'DejaVu Math TeX Gyre'" in declared(our_style(printed), None, "math")["font-family"]


def test_the_exporter_kept_between_pages_shows_each_page_as_it_is(tmp_path):
    """One exporter serves a process, its sanitizing of code cells kept by their text: the same cells give the same
    page, an edited cell its new text, and markup typed into code still shows as text."""
    code = new_code_cell("x = '<b>bold</b>'  # version-one", execution_count=1)
    first = page(tmp_path, code)
    assert page(tmp_path, code) == first
    edited = page(tmp_path, new_code_cell("x = '<b>bold</b>'  # version-two", execution_count=1))
    assert "version-two" in edited and "version-one" not in edited
    assert "<b>bold</b>" not in edited and "&lt;b&gt;bold&lt;/b&gt;" in edited
