"""Progress and messages for long work, silenced for scripts (``--quiet``/``--json``)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Reporter:
    """Progress bars (tqdm) and one-line notes on stderr unless ``quiet``; result lines on stdout
    unless ``results`` is off (``--json``, whose document is then all that stdout holds)."""

    def __init__(self, quiet: bool = False, results: bool = True, place: str = ""):
        self.quiet, self.results, self.place = quiet, results, place

    def within(self, place: str) -> Reporter:
        """This reporter, its bars labelled with ``place`` (e.g. " [3/1000]": where a run of many stands)."""
        return Reporter(self.quiet, self.results, place)

    def note(self, message: str) -> None:
        """Progress, warnings and anything else that is not a result: stderr."""
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        """A failure the run goes on after (e.g. one image of a folder): ``error: message`` on stderr,
        shown even with ``--quiet``."""
        print(f"error: {message}", file=sys.stderr, flush=True)

    def result(self, message: str) -> None:
        """A result line (scores, files written): stdout, kept by ``--quiet``."""
        if self.results:
            print(message, flush=True)

    @contextlib.contextmanager
    def bar(self, total: int | None, description: str) -> Iterator[Progress]:
        """Yields a :class:`Progress` drawn as a bar of ``total`` steps (None: not known yet, see
        :meth:`Progress.stage`; 0: nothing to show). Where stderr is not a terminal (a log file, a pipe),
        whole lines instead (:class:`_LineProgress`), so that the log reads line by line and an error
        after it starts a line of its own."""
        if self.quiet or (total is not None and total <= 0):
            yield Progress()
            return
        desc = description + self.place
        if not sys.stderr.isatty():
            yield _LineProgress(desc, total)
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
            yield _BarProgress(bar, desc)


class Progress:
    """How long work moves its bar: ``progress(step, loss)`` after each step, ``progress.stage(text)``
    when work without steps starts (a whole-image pass, scoring) so the bar says what it waits for.
    This base class shows nothing (``--quiet``, ``--json``)."""

    def __call__(self, step: int, loss: float | None = None) -> None:
        """``step`` steps of the total are done; ``loss`` is shown beside them."""

    def stage(self, text: str, total: int | None = None) -> None:
        """What the work is now; ``total`` sets the number of steps where it was not known (or changed)."""

    def tiles_of(self, text: str):
        """An ``on_tile(done, total)`` callback (tiled passes, :func:`rfr_deploy.inference.run_tiled`) that
        shows ``text: tile done/total`` as the stage."""
        return lambda done, total: self.stage(f"{text}: tile {done}/{total}")


class _BarProgress(Progress):
    def __init__(self, bar, description: str):
        self._bar, self._description = bar, description

    def __call__(self, step: int, loss: float | None = None) -> None:
        self._bar.update(step - self._bar.n)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3e}", refresh=False)

    def stage(self, text: str, total: int | None = None) -> None:
        if total is not None and total != self._bar.total:
            self._bar.reset(total=total)
        self._bar.set_description_str(f"{self._description}: {text}")


LINE_SECONDS = 10.0
"""Where progress goes to a log rather than a terminal: the least time between two lines of steps."""


class _LineProgress(Progress):
    """Progress as whole lines on stderr, for logs: each stage, and the steps every :data:`LINE_SECONDS`."""

    def __init__(self, description: str, total: int | None):
        self._description, self._total = description, total
        self._last = time.monotonic()

    def __call__(self, step: int, loss: float | None = None) -> None:
        if time.monotonic() - self._last < LINE_SECONDS:
            return
        shown = f" (loss {loss:.3e})" if loss is not None else ""
        self._line(f"{step}/{self._total or '?'}{shown}")

    def stage(self, text: str, total: int | None = None) -> None:
        self._total = total if total is not None else self._total
        self._line(text)

    def tiles_of(self, text: str):
        """Tiles like steps: a line every :data:`LINE_SECONDS` at most, and one when the last is done."""

        def on_tile(done: int, total: int) -> None:
            if done == total or time.monotonic() - self._last >= LINE_SECONDS:
                self._line(f"{text}: tile {done}/{total}")

        return on_tile

    def _line(self, text: str) -> None:
        self._last = time.monotonic()
        print(f"{self._description}: {text}", file=sys.stderr, flush=True)


QUIET = Reporter(quiet=True, results=False)
