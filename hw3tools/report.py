"""The report as a template over a run's metrics: render it, check it against a run, hold a run to the record.

report/template.md is the report with each measured number written as a named field, `{accuracy:.3f}`; VALUES
says which metric each name reads. The notebook's report cells are the template rendered from the metrics of one
run, report/record.json (committed), and from the committed study, study/summary.json; a test holds them to both
exactly. A run elsewhere gives slightly different
numbers (another CPU, thread count, torch or device changes the last bits, and 632 training steps carry that into
the third decimal): `make run` renders the executed notebook's report from that run's own metrics, `make check`
names every number of a report that its run contradicts, and every sentence in CLAIMS whose claim the run does
not bear out. A fresh run is held to the record within the tolerances of report/tolerances.json, which
`python -m hw3tools tolerances` measures.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hw3tools.notebook import ROOT, is_added, report_cells

REPORT_DIR = ROOT / "report"
TEMPLATE = REPORT_DIR / "template.md"
RECORD = REPORT_DIR / "record.json"
TOLERANCES = REPORT_DIR / "tolerances.json"
STUDY_SUMMARY = ROOT / "study" / "summary.json"
CELL_BREAK = "\n<!-- next cell -->\n"
FIELD = re.compile(r"\{([a-z][a-z0-9_]*)(?::([^{}]*))?\}")
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?%?"


# --------------------------------------------------------------------------------------------------------------
# What each field reads
# --------------------------------------------------------------------------------------------------------------

def sampling(setting: str, key: str) -> Callable[[dict], float]:
    return lambda m: next(row for row in m["sampling_study"] if row["setting"] == setting)[key]


def study_config(m: dict, group: str, name: str) -> dict:
    return next(c for c in m["study"] if c["group"] == group and c["name"] == name)


def study(group: str, name: str, key: str, stat: str = "mean") -> Callable[[dict], float]:
    return lambda m: study_config(m, group, name)[key][stat]


def first_position(curve: list[float], level: float) -> int:
    return next((p for p, value in enumerate(curve) if value >= level), -1)


VALUES: dict[str, tuple[str, Callable[[dict], float]]] = {  # field -> (the metric, in words; how to read it)
    "accuracy": ("final_test_accuracy", lambda m: m["final_test_accuracy"]),
    "ceiling": ("bayes_optimal_accuracy", lambda m: m["bayes_optimal_accuracy"]),
    **{f"greedy_{key}": (f"sampling_study[greedy].{metric}", sampling("greedy", metric))
       for key, metric in (("rule", "rule_consistent"), ("bayes", "bayes_agreement"),
                           ("distinct", "distinct_continuations"))},
    **{f"t{t.replace('.', '')}_p{p.replace('.', '')}_{key}": (f"sampling_study[t={t}, top_p={p}].{metric}",
                                                             sampling(f"t={t}, top_p={p}", metric))
       for t in ("0.5", "1.0", "1.5", "2.0") for p in ("0.5", "0.9", "1.0")
       for key, metric in (("rule", "rule_consistent"), ("bayes", "bayes_agreement"),
                           ("distinct", "distinct_continuations"))},
    **{f"model_pos{p}": (f"per_position_accuracy[{p}]", lambda m, p=p: m["per_position_accuracy"][p])
       for p in range(64)},
    **{f"ceiling_pos{p}": (f"bayes_per_position_accuracy[{p}]", lambda m, p=p: m["bayes_per_position_accuracy"][p])
       for p in range(64)},
}


STUDY_FIELDS = {  # field prefix -> (group, configuration name) in the committed study
    "dense": ("variants", "dense (prescribed)"), "gqa": ("variants", "GQA, 2 KV heads"),
    "moe": ("variants", "MoE, 4 experts top-2"), "sliding": ("variants", "sliding window 8, alternating"),
    "allthree": ("variants", "all three"),
    "epochs16": ("epochs", "16 epochs"), "epochs32": ("epochs", "32 epochs"),
    "width96": ("capacity", "width 96"), "width128": ("capacity", "width 128"),
    "data20k": ("data", "20000 sequences"), "data40k": ("data", "40000 sequences"),
    "data80k": ("data", "80000 sequences"),
}
for prefix, (group, name) in STUDY_FIELDS.items():
    for suffix, key, stat in (("acc", "test_accuracy", "mean"), ("sd", "test_accuracy", "std"),
                              ("gap", "gap_to_ceiling", "mean"), ("gapsd", "gap_to_ceiling", "std"),
                              ("diff", "difference_from_prescribed", "mean"),
                              ("diffsd", "difference_from_prescribed", "std"),
                              ("minutes", "train_seconds", "mean"), ("loss", "final_train_loss", "mean")):
        scale = 1 / 60 if key == "train_seconds" else 1
        VALUES[f"{prefix}_{suffix}"] = (f"study[{group}: {name}].{key}.{stat}" + (" / 60" if scale != 1 else ""),
                                        lambda m, g=group, n=name, k=key, st=stat, sc=scale: study(g, n, k, st)(m) * sc)
    VALUES[f"{prefix}_seeds"] = (f"number of seeds of study[{group}: {name}]",
                                 lambda m, g=group, n=name: len(study(g, n, "test_accuracy", "per_seed")(m)))
    for key in ("steps", "parameters"):
        VALUES[f"{prefix}_{key}"] = (f"study[{group}: {name}].{key}",
                                     lambda m, g=group, n=name, k=key: study_config(m, g, n)[k])


def gap_by_position(m: dict) -> list[float]:
    return [b - a for a, b in zip(m["per_position_accuracy"], m["bayes_per_position_accuracy"], strict=True)]


VALUES.update({
    "gap_early_share": ("share of the summed per-position gap (bayes - model) at positions 0-9",
                        lambda m: sum(gap_by_position(m)[:10]) / sum(gap_by_position(m))),
    "gap_late_mean": ("mean per-position gap (bayes - model) over positions 10-63",
                      lambda m: sum(gap_by_position(m)[10:]) / len(gap_by_position(m)[10:])),
    "probe_best": ("the probe's best pair accuracy, over stages and positions",
                   lambda m: max(max(stage) for stage in m["probe"]["pair"])),
    "bayes_pair_pos3": ("probe.bayes_map_accuracy[3]", lambda m: m["probe"]["bayes_map_accuracy"][3]),
    "model_first_084": ("first position whose per-position accuracy reaches 0.84",
                        lambda m: first_position(m["per_position_accuracy"], 0.84)),
})


@dataclass(frozen=True)
class Claim:
    """A sentence of the report whose truth depends on the run, and the test of it on the run's metrics."""

    text: str  # as it stands in the template (white space aside)
    holds: Callable[[dict], bool]
    contradicted_by: Callable[[dict], dict]  # metrics of a run that would break it: the tests show it can fail


def _rule(m: dict, t: str, p: str) -> float:
    return sampling(f"t={t}, top_p={p}", "rule_consistent")(m)


def _set_rule(m: dict, setting: str, value: float) -> dict:
    next(row for row in m["sampling_study"] if row["setting"] == setting)["rule_consistent"] = value
    return m


def _probe_gap_after(m: dict, first: int) -> float:
    """How far the best stage's probe stays below the Bayes posterior's accuracy, at worst, from position `first`."""
    best = [max(stage[p] for stage in m["probe"]["pair"]) for p in range(len(m["probe"]["bayes_map_accuracy"]))]
    return min(b - a for a, b in list(zip(best, m["probe"]["bayes_map_accuracy"], strict=True))[first:])


def _with(m: dict, key: str, value) -> dict:
    m[key] = value
    return m


def _paired(m: dict, prefix: str) -> dict:
    """A configuration's seed-by-seed difference from the prescribed model, in the committed study."""
    return study_config(m, *STUDY_FIELDS[prefix])["difference_from_prescribed"]


def _within_spread(m: dict, prefix: str) -> bool:
    """The mean difference is no larger than twice its standard error: no difference is claimed."""
    stat = _paired(m, prefix)
    return abs(stat["mean"]) <= 2 * stat["std"] / math.sqrt(len(stat["per_seed"]))


def _beats_on_every_seed(m: dict, prefix: str) -> bool:
    stat = _paired(m, prefix)
    return all(d > 0 for d in stat["per_seed"]) and stat["mean"] > 2 * stat["std"] / math.sqrt(len(stat["per_seed"]))


def _ahead_on_every_seed(m: dict, prefix: str, others: tuple[str, ...]) -> bool:
    """On every seed they share, `prefix` gains more over the prescribed model than each of `others`."""
    ahead = _paired(m, prefix)["per_seed"]
    return all(a > b for other in others for a, b in zip(ahead, _paired(m, other)["per_seed"], strict=True))


def _set_paired(m: dict, prefix: str, per_seed: list[float]) -> dict:
    stat = _paired(m, prefix)
    stat.update(per_seed=per_seed, mean=sum(per_seed) / len(per_seed), std=0.0)
    return m


TEMPERATURES = ("0.5", "1.0", "1.5", "2.0")
CLAIMS: list[Claim] = [
    Claim("That is the ceiling.",
          lambda m: m["final_test_accuracy"] <= m["bayes_optimal_accuracy"],
          lambda m: _with(m, "final_test_accuracy", m["bayes_optimal_accuracy"] + 0.01)),
    Claim("Greedy follows the rule more often than nucleus sampling",
          lambda m: sampling("greedy", "rule_consistent")(m) > _rule(m, "1.0", "0.9"),
          lambda m: _set_rule(m, "greedy", 0.5)),
    Claim("rule-consistency falls as the temperature rises.",
          lambda m: all(_rule(m, a, p) > _rule(m, b, p) for p in ("0.9", "1.0")
                        for a, b in zip(TEMPERATURES[:-1], TEMPERATURES[1:], strict=True)),
          lambda m: _set_rule(m, "t=2.0, top_p=1.0", 0.999)),
    Claim("A small nucleus protects against high temperature",
          lambda m: all(_rule(m, t, "0.5") > _rule(m, t, "1.0") for t in ("1.5", "2.0")),
          lambda m: _set_rule(m, "t=2.0, top_p=0.5", 0.1)),
    Claim("then follows the ceiling closely.",
          lambda m: VALUES["gap_late_mean"][1](m) < 0.05,
          lambda m: _with(m, "per_position_accuracy", [a - 0.1 * (p >= 10)
                                                       for p, a in enumerate(m["per_position_accuracy"])])),
    Claim("Its gap to the ceiling is largest in the first ten positions",
          lambda m: max(range(len(gap_by_position(m))), key=gap_by_position(m).__getitem__) < 10,
          lambda m: _with(m, "per_position_accuracy", [0.0 if p == 40 else a
                                                       for p, a in enumerate(m["per_position_accuracy"])])),
    Claim("the linear probe stays far below the Bayes posterior at every position after the first three tokens",
          lambda m: _probe_gap_after(m, 3) > 0.2,
          lambda m: {**m, "probe": {**m["probe"], "pair": [m["probe"]["bayes_map_accuracy"]] * 2}}),
    Claim("beats the dense model on every seed",
          lambda m: _beats_on_every_seed(m, "moe"),
          lambda m: _set_paired(m, "moe", [-0.001, 0.002, 0.003])),
    Claim("stay within the spread over seeds, so I claim no difference.",
          lambda m: _within_spread(m, "gqa") and _within_spread(m, "sliding"),
          lambda m: _set_paired(m, "sliding", [-0.01, -0.01, -0.01])),
    Claim("more data helps most",
          lambda m: _ahead_on_every_seed(m, "data40k", ("epochs32", "width128")),
          lambda m: _set_paired(m, "data40k", [-0.01, -0.01])),
    Claim("short of my aim of one point",
          lambda m: study("data", "80000 sequences", "gap_to_ceiling")(m) > 0.01,
          lambda m: study_config(m, "data", "80000 sequences")["gap_to_ceiling"].update(mean=0.005) or m),
    Claim("lowers the training loss further",
          lambda m: study("epochs", "32 epochs", "final_train_loss")(m) < study("data", "40000 sequences",
                                                                               "final_train_loss")(m),
          lambda m: study_config(m, "epochs", "32 epochs")["final_train_loss"].update(mean=9.0) or m),
    Claim("the model overfits its 10000 sequences",
          lambda m: _paired(m, "epochs32")["mean"] < _paired(m, "epochs16")["mean"] + 2 * max(
              _paired(m, "epochs16")["std"], 0.001),
          lambda m: _set_paired(m, "epochs32", [0.05, 0.05])),
]


# --------------------------------------------------------------------------------------------------------------
# Render and check
# --------------------------------------------------------------------------------------------------------------

def field_values(template: str, metrics: dict) -> dict[str, str]:
    """Each field of the template formatted from the metrics; a field VALUES does not know is an error."""
    values = {}
    for name, spec in FIELD.findall(template):
        if name not in VALUES:
            raise KeyError(f"the report template uses {{{name}}}, which VALUES in hw3tools/report.py does not define")
        try:
            value = VALUES[name][1](metrics)
        except (KeyError, IndexError, TypeError, StopIteration) as missing:
            raise KeyError(f"the metrics have no {VALUES[name][0]} for {{{name}}} ({missing!r})") from None
        values[name] = format(value, spec)
    return values


def render(template: str, metrics: dict) -> list[str]:
    """The report cells: the template's fields filled in from the metrics."""
    values = field_values(template, metrics)
    filled = FIELD.sub(lambda match: values[match.group(1)], template)
    return [cell.strip() for cell in filled.split(CELL_BREAK.strip())]


def _cells_text(cells: list[str]) -> str:
    return "\n\n".join(cell.strip() for cell in cells)


def contradictions(report: str, template: str, metrics: dict) -> list[str]:
    """Every number of `report` that the run behind `metrics` contradicts, named with its metric.

    The report must be the template with numbers in its fields; where its wording was changed by hand, that is
    named instead (the first line that differs).
    """
    chunks = FIELD.split(template.replace(CELL_BREAK, "\n\n").strip())  # literal, name, spec, literal, ...
    pattern = "".join(re.escape(chunk) if i % 3 == 0 else f"({NUMBER})" if i % 3 == 1 else ""
                      for i, chunk in enumerate(chunks))
    match = re.fullmatch(_loose_space(pattern), report.strip())
    if match is None:
        expected = _cells_text(render(template, metrics)).splitlines()
        actual = report.strip().splitlines()
        mask = lambda line: re.sub(NUMBER, "#", line.strip())  # noqa: E731
        line = next((i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if mask(a) != mask(b)),
                    min(len(actual), len(expected)))
        shown = actual[line] if line < len(actual) else "(the report ends here)"
        return [f"the report's wording differs from report/template.md at line {line + 1}: {shown.strip()!r}"]
    values = field_values(template, metrics)
    names = chunks[1::3]
    return [f"the report quotes {quoted} for {VALUES[name][0]} ({{{name}}}); this run gives {values[name]}"
            for name, quoted in zip(names, match.groups(), strict=True) if quoted != values[name]]


def _loose_space(pattern: str) -> str:
    """Any run of white space in the template matches any run in the report (cells are joined by blank lines)."""
    return re.sub(r"(\\ |\\\n|\\\t)+", r"\\s+", pattern)


def broken_claims(metrics: dict) -> list[str]:
    return [f"the report claims {claim.text!r}, which this run does not bear out" for claim in CLAIMS
            if not claim.holds(metrics)]


def render_into(nb, metrics: dict, template: Path = TEMPLATE) -> None:
    """The notebook's report cells rendered from a run's metrics and the committed study."""
    set_report(nb, render(Path(template).read_text(), quoted_sources(metrics)))


def set_report(nb, cells: list[str]) -> None:
    """Replace the notebook's report cells (ours, after the `Your report` heading) with `cells`."""
    import nbformat

    old = report_cells(nb)
    if not old:
        raise ValueError("the notebook has no report cells to replace")
    first = nb.cells.index(old[0])
    nb.cells = [c for c in nb.cells if not any(c is o for o in old)]
    for offset, source in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source)
        cell.metadata["tags"] = ["added"]
        cell["id"] = old[offset]["id"] if offset < len(old) else f"report-{offset}"
        nb.cells.insert(first + offset, cell)
    assert all(is_added(c) for c in report_cells(nb))


# --------------------------------------------------------------------------------------------------------------
# A run against the record
# --------------------------------------------------------------------------------------------------------------

def flatten(value, path: str = "") -> dict[str, float]:
    """Numeric leaves by path: `sampling_study[t=1.0, top_p=0.9].bayes_agreement`, `per_position_accuracy[3]`."""
    if isinstance(value, bool):
        return {path: float(value)}
    if isinstance(value, (int, float)):
        return {path: float(value)}
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            label = item.get("setting") or (f"{item['group']}: {item['name']}" if "group" in item else index) \
                if isinstance(item, dict) else index
            out.update(flatten(item, f"{path}[{label}]"))
        return out
    return {}


IGNORED = re.compile(r"seconds|speedup|torch_version|^kv_cache\.lengths")  # timings are not results


def family_of(path: str, families: dict) -> str | None:
    return next((name for name, spec in families.items() if re.search(spec["paths"], path)), None)


def deviations(metrics: dict, record: dict, families: dict) -> dict[str, tuple[float, str]]:
    """Per family, the largest absolute difference between a run and the record, and where it is."""
    run, recorded = flatten(metrics), flatten(record)
    paths = {p for p in recorded | run if not IGNORED.search(p)}
    largest: dict[str, tuple[float, str]] = {}
    for path in sorted(paths):
        family = family_of(path, families)
        if family is None:
            raise KeyError(f"no tolerance family covers the metric {path}; add one in report/tolerances.json")
        if path not in run or path not in recorded:
            difference = math.inf
        else:
            difference = abs(run[path] - recorded[path])
        if difference > largest.get(family, (-1.0, ""))[0]:
            largest[family] = (difference, path)
    return largest


def tolerance(family: dict, margin: float) -> float:
    """max(floor, margin x every difference measured or reported), rounded up to two significant digits."""
    seen = [m["difference"] for m in family.get("measured", {}).values()] + list(family.get("reported", {}).values())
    value = max([family["floor"]] + [margin * difference for difference in seen])
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.ceil(value / step - 1e-9) * step:.2g}")


def outside_tolerance(metrics: dict, record: dict, tolerances: dict) -> list[str]:
    families = tolerances["families"]
    return [f"{family}: {path} differs from the record by {difference:.3g}, more than its tolerance "
            f"{families[family]['tolerance']:g}"
            for family, (difference, path) in deviations(metrics, record, families).items()
            if difference > families[family]["tolerance"]]


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def quoted_sources(metrics: dict, summary_path: Path = STUDY_SUMMARY) -> dict:
    """What the report quotes: a run's metrics, and under "study" the committed study, which the notebook draws
    but does not run (so `make study` can change it without a new run of the notebook)."""
    summary = load_json(summary_path) if Path(summary_path).exists() else {"configs": []}
    return {**metrics, "study": summary["configs"]}
