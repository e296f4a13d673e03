"""Plain-text tables for evaluation results (shared by RSE and ICE)."""

from collections.abc import Sequence
from dataclasses import asdict


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def result_dict(result, details: str, with_details: bool) -> dict:
    """A result dataclass as plain JSON-ready data, without its per-item field `details` unless `with_details`."""
    out = asdict(result)
    if not with_details:
        out.pop(details)
    return out


def text_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Left-aligned first column, right-aligned numbers, three decimals, `-` for missing values."""
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
