"""A stand-in for Colab's frontend, for runs of the notebook through nbclient: a `google.colab` package on the
kernel's path whose `_message.blocking_request("get_ipynb")` answers with the notebook as the executing client holds
it when the cell asking for it starts (a hook of the client writes it before each cell), in Colab's form: sources
and texts as lists of lines, `metadata.colab`, and no cell tags (Colab's editor has none). `files.download` records
the path it is given. With `answer="none"`, blocking_request returns None, as Colab's does when its frontend does not
answer within the timeout."""
from __future__ import annotations

import json
import os
from pathlib import Path

MESSAGE = '''
import json, os


def blocking_request(request_type, request="", timeout_sec=5, parent=None):
    assert request_type == "get_ipynb", request_type
    if os.environ["HW3_STANDIN_ANSWER"] == "none":
        return None
    with open(os.environ["HW3_STANDIN_NOTEBOOK"], encoding="utf-8") as file:
        return {"ipynb": json.load(file)}
'''
FILES = '''
import os


def download(filename):
    with open(os.environ["HW3_STANDIN_DOWNLOADS"], "a", encoding="utf-8") as file:
        file.write(os.path.abspath(filename) + "\\n")
'''


def install(folder: Path, answer: str = "notebook") -> dict[str, str]:
    """Write the package into `folder`; returns the kernel's environment that puts it on the path."""
    package = folder / "standin" / "google" / "colab"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "_message.py").write_text(MESSAGE, encoding="utf-8")
    (package / "files.py").write_text(FILES, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(folder / "standin"), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "HW3_STANDIN_ANSWER": answer,
            "HW3_STANDIN_NOTEBOOK": str(folder / "frontend.ipynb"),
            "HW3_STANDIN_DOWNLOADS": str(folder / "downloads.txt")}


def lines(text) -> list[str]:
    return text.splitlines(keepends=True) if isinstance(text, str) else text


def colab_form(nb) -> dict:
    """The notebook as Colab's frontend hands it over."""
    data = json.loads(json.dumps(nb))
    data["metadata"]["colab"] = {"provenance": []}
    for cell in data["cells"]:
        cell["source"] = lines(cell["source"])
        cell["metadata"] = {key: value for key, value in cell.get("metadata", {}).items() if key != "tags"}
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = lines(output["text"])
            for mime in ("text/markdown", "text/plain"):
                if mime in output.get("data", {}):
                    output["data"][mime] = lines(output["data"][mime])
    return data


def frontend_hook(folder: Path):
    """For run_notebook(on_cell_execute=...): before each cell, the notebook as it stands, for the stand-in."""
    def write(nb, index):
        (folder / "frontend.ipynb").write_text(json.dumps(colab_form(nb)), encoding="utf-8")
    return write


def downloads(folder: Path) -> list[str]:
    path = folder / "downloads.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


LINK = "https://colab.research.google.com/drive/1AbC-xyz"  # a link as a student pastes it


def export_cell_alone_after_the_run(out: Path, frontend: Path, said: dict):
    """What a student does in Colab after Run all, in the same session: paste the link and run the export cell
    alone; change a report cell's code and run the export cell alone; run that report cell again alone, then the
    export cell. What the export cell printed and downloaded each time goes into `said`; the notebook, the zip and
    the downloads of the run itself are left as they were. For the runner's `then`."""
    import copy

    import hw3_helpers as hw3

    def then(client, nb):
        kept, zipped = copy.deepcopy(nb.cells), (out / "hw3_submission.zip").read_bytes()
        before_all = downloads(frontend)
        export = next(i for i, c in enumerate(nb.cells) if hw3.is_export_cell(c))

        def export_alone(case):
            before = len(downloads(frontend))
            client.execute_cell(nb.cells[export], export)  # the stand-in hands over the notebook as it stands
            said[case] = ("".join(o.get("text", "") for o in nb.cells[export].outputs), downloads(frontend)[before:])

        next(c for c in nb.cells if hw3.is_link_cell(c)).source = f"{hw3.COLAB_LEAD} [open in Colab]({LINK})"
        export_alone("link pasted")
        said["zip with the link"] = (out / "hw3_submission.zip").read_bytes()
        temperature = next(c for c in nb.cells if "**Temperature.**" in c.source)
        temperature.source = temperature.source.replace(" the ", " a ", 1)
        export_alone("report cell changed")
        client.execute_cell(temperature, nb.cells.index(temperature))
        export_alone("report cell run again alone")
        nb.cells[:] = kept
        (out / "hw3_submission.zip").write_bytes(zipped)
        (frontend / "downloads.txt").write_text("".join(f"{path}\n" for path in before_all), encoding="utf-8")
    return then
