"""Listings for people, with every id and number printed whole.

Rich fits a table that is wider than the terminal by cutting cells short
(``H800-…``, ``18.…``), which on an exchange's command line hides the very ids
and prices a user reads and types back. A ``Listing`` never cuts a cell:

* a table that fits the terminal is printed as one; only columns of free text
  wrap, at spaces;
* one that does not fit is printed a record at a time, one field a line, like
  ``psql``'s expanded display;
* output that is not a terminal (a pipe, a file) is always the table, every row
  on one line, whatever ``COLUMNS`` says, so it can be searched and cut.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

_UNBOUNDED = 100_000  # wider than any listing: measure at the width it asks for


class Listing:
    """Rows under named columns, shown as a table or as records (see the module doc)."""

    def __init__(
        self,
        title: str,
        columns: Sequence[str],
        *,
        numbers: Collection[str] = (),
        text: Collection[str] = (),
    ) -> None:
        self.title = title
        self.columns = tuple(columns)
        self.numbers = frozenset(numbers)  # right-aligned
        self.text = frozenset(text)  # free to wrap
        self.rows: list[tuple[tuple[str, ...], str | None]] = []

    def add_row(self, *cells: str, style: str | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append((cells, style))

    def table(self) -> Table:
        out = Table(title=self.title, title_justify="left")
        for column in self.columns:
            out.add_column(
                column,
                justify="right" if column in self.numbers else "left",
                no_wrap=column not in self.text,
            )
        for cells, style in self.rows:
            out.add_row(*cells, style=style)
        return out

    def records(self) -> Table:
        """One record a section, one field a line; empty fields left out."""
        out = Table(title=self.title, title_justify="left", show_header=False)
        out.add_column(style="bold", no_wrap=True)
        out.add_column(overflow="fold")
        for cells, style in self.rows:
            fields = [(c, v) for c, v in zip(self.columns, cells, strict=True) if v]
            for i, (column, value) in enumerate(fields):
                out.add_row(column, value, style=style, end_section=i == len(fields) - 1)
        return out

    def show(self, console: Console) -> None:
        """Print on ``console`` without cutting any cell short."""
        table = self.table()
        need = Measurement.get(console, console.options.update_width(_UNBOUNDED), table)
        if not console.is_terminal:
            Console(file=console.file, width=max(need.maximum, console.width)).print(table)
        elif need.minimum <= console.width:
            console.print(table)
        else:
            console.print(self.records())
