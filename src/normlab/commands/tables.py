"""Tables that fit the terminal: key columns always, the others while they fit (``--wide``: all).

A command builds its rows as dicts and names its key columns; :func:`fitted_table` keeps the
key columns, adds the optional ones in the order given while the table still fits the console
width, and says which were left out and how to see them (``--wide`` or ``--json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import JustifyMethod

BORDER = 3  # rich's box: "│ " before a cell and " " after it; one more "│" closes the row


@dataclass(frozen=True)
class Column:
    """A table column: its header, whether it always shows, and its alignment."""

    name: str
    key: bool = False
    justify: JustifyMethod = "right"


def _width(column: Column, cells: Sequence[str]) -> int:
    """The column's natural width: rich shrinks none of the columns when all of them fit."""
    from rich.cells import cell_len

    return max([cell_len(column.name), *(cell_len(c) for c in cells)])


def shown_columns(
    columns: Sequence[Column], rows: Sequence[dict[str, str]], width: int, wide: bool
) -> list[Column]:
    """The key columns plus the optional ones, in order, that fit in ``width`` characters."""
    if wide:
        return list(columns)
    need = {c.name: _width(c, [r.get(c.name, "") for r in rows]) + BORDER for c in columns}
    kept = {c.name for c in columns if c.key}
    used = 1 + sum(need[name] for name in kept)
    for column in columns:
        if column.name not in kept and used + need[column.name] <= width:
            kept.add(column.name)
            used += need[column.name]
    return [c for c in columns if c.name in kept]


def fitted_table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[dict[str, str]],
    *,
    width: int,
    wide: bool = False,
    rest: str = "--wide or --json for all",
) -> tuple[Any, str | None]:
    """A rich ``Table`` that fits ``width``, and a note naming the columns left out (or None)."""
    from rich.markup import escape
    from rich.table import Table

    shown = shown_columns(columns, rows, width, wide)
    table = Table(title=escape(title))
    for column in shown:
        table.add_column(escape(column.name), justify=column.justify)
    for row in rows:
        table.add_row(*(escape(row.get(c.name, "")) for c in shown))
    left_out = [c.name for c in columns if c not in shown]
    note = None
    if left_out:
        note = f"(not shown at this width: {', '.join(left_out)}; {rest})"
    return table, note
