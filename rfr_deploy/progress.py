"""Progress and messages for long work, silenced for scripts (``--quiet``/``--json``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


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
    def bar(self, total: int, description: str) -> Iterator[Callable[[int, float | None], None]]:
        """Yields ``update(step, loss)``; shows a bar of ``total`` steps."""
        if self.quiet or total <= 0:
            yield lambda step, loss=None: None
            return
        from tqdm import tqdm

        desc = description + self.place
        with tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

            def update(step: int, loss: float | None = None) -> None:
                bar.update(step - bar.n)
                if loss is not None:
                    bar.set_postfix(loss=f"{loss:.3e}", refresh=False)

            yield update


QUIET = Reporter(quiet=True, results=False)
