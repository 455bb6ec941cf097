"""Benchmark figures as rows beside their same-run baselines, printed as one table.

Every benchmark script builds :class:`Row` objects, prints them with
:func:`print_table`, and, given ``--json PATH``, appends them to a JSON file
that ``bench/run.py`` merges into the single report of ``make bench``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measured figure and the baseline it is compared with."""

    section: str
    metric: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    target: str = ""
    spread: str = ""  # the range of ``value`` over the rounds it is the median of

    @property
    def ratio(self) -> float:
        """``value / baseline`` (0 when the baseline is 0)."""
        return self.value / self.baseline if self.baseline else 0.0


def format_figure(value: float) -> str:
    """A figure with as many digits as it deserves."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table, grouped by section."""
    header = ("section", "metric", "value", "baseline", "ratio", "target")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.section,
                row.metric,
                f"{format_figure(row.value)} {row.unit}"
                + (f" [{row.spread}]" if row.spread else ""),
                f"{format_figure(row.baseline)} {row.unit} ({row.baseline_name})",
                f"{row.ratio:.2f}x",
                row.target,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def print_table(rows: Sequence[Row]) -> None:
    """Print the table on stdout."""
    print(format_table(rows), flush=True)


def append_json(path: Path | None, rows: Iterable[Row]) -> None:
    """Add rows to the JSON list at ``path`` (created if missing)."""
    if path is None:
        return
    existing = json.loads(path.read_text()) if path.exists() else []
    existing.extend(asdict(row) for row in rows)
    path.write_text(json.dumps(existing, indent=2))


def read_json(path: Path) -> list[Row]:
    """Rows written by :func:`append_json`."""
    return [Row(**raw) for raw in json.loads(path.read_text())] if path.exists() else []
