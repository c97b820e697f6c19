"""What several tests use and nothing else does (not a test module)."""
from hw3_helpers import is_added, significant_lines, strip_todo_bodies
from hw3tools.record import deviations


def handed_out_lines(nb) -> list[str]:
    """The assignment as the notebook carries it: every cell that is not ours, TODO bodies removed."""
    lines = []
    for cell in nb.cells:
        if is_added(cell):
            continue
        source = strip_todo_bodies(cell.source) if cell.cell_type == "code" else cell.source
        lines += significant_lines(source)
    return lines


def outside_tolerance(metrics: dict, record: dict, tolerances: dict) -> list[str]:
    families = tolerances["families"]
    return [f"{family}: {path} differs from the record by {difference:.3g}, more than its tolerance "
            f"{families[family]['tolerance']:g}"
            for family, (difference, path) in deviations(metrics, record, families).items()
            if difference > families[family]["tolerance"]]
