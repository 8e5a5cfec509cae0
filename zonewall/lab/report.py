"""Rendering reachability matrices for people (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

Matrix = dict[str, dict[str, list[str]]]


def matrix_table(matrix: Matrix, title: str, expected: Matrix | None = None) -> Table:
    """Rows are sources, columns targets; a cell lists the services delivered.

    With `expected`, a cell that differs shows both, marked in red.
    """
    targets = sorted({t for row in matrix.values() for t in row})
    table = Table(title=title, show_lines=True)
    table.add_column("from \\ to", style="bold")
    for target in targets:
        table.add_column(target)
    for source in matrix:
        cells = []
        for target in targets:
            if target not in matrix[source]:
                cells.append("")
                continue
            got = sorted(matrix[source][target])
            text = " ".join(got) or "-"
            if expected is not None:
                want = sorted(expected.get(source, {}).get(target, []))
                text = f"[green]{text}[/green]" if want == got else f"[red]{text}[/red] (expected {' '.join(want) or '-'})"
            cells.append(text)
        table.add_row(source, *cells)
    return table


def print_matrix(console: Console, matrix: Matrix, title: str, expected: Matrix | None = None) -> None:
    console.print(matrix_table(matrix, title, expected))


def differences(measured: Matrix, expected: Matrix) -> list[str]:
    out = []
    for source, row in measured.items():
        for target, got in row.items():
            want = sorted(expected.get(source, {}).get(target, []))
            if sorted(got) != want:
                out.append(f"{source} -> {target}: measured {sorted(got) or '-'}, expected {want or '-'}")
    return out
