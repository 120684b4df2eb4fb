"""Progress bars (bytes, rate, time left) on a terminal only; ``--quiet`` and pipes get none."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class TransferProgress:
    """One bar for one transfer; ``advance`` may be called from any thread (rich locks its tasks)."""

    def __init__(self, description: str, total: int, done: int = 0, enabled: bool = True):
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._task = self._progress.add_task(description, total=total, completed=done)

    def __enter__(self) -> TransferProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, count: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)

    def reset(self, done: int = 0) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task, completed=done)
