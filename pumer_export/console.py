"""Terminal output shared by the commands: a stderr console, progress, tables."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

#: Width of tables written to a pipe or file (CI logs): wide enough that values are never cut; a terminal
#: uses its own width and tables wrap cells instead of truncating them.
PIPE_WIDTH = 240


def _width(stream) -> int | None:
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return None if stream.isatty() else PIPE_WIDTH
    except (AttributeError, ValueError):
        return PIPE_WIDTH


#: Human-facing messages and progress go to stderr; stdout stays for results (tables, JSON).
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))
out_console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


def info(message: str) -> None:
    err_console.print(message)


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs (on a terminal), then a ``done`` line.

    Without a terminal (CI logs, pipes) nothing is printed until the step succeeds, so a failing
    step leaves exactly the one ``error:`` line.
    """
    if not err_console.is_terminal:
        yield
        err_console.print(f"done {description}")
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True
    ) as progress:
        progress.add_task(description, total=None)
        yield
    err_console.print(f"[green]done[/green] {description}")


def progress_bar() -> Progress:
    """A progress bar for counted work (use as a context manager)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
    )


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result
