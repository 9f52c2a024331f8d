"""Progress and messages for long work, silenced for scripts (``--quiet``/``--json``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


class Reporter:
    """Shows progress bars (tqdm, on stderr) and one-line notes unless ``quiet``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def bar(self, total: int, description: str) -> Iterator[Callable[[int, float | None], None]]:
        """Yields ``update(step, loss)``; shows a bar of ``total`` steps."""
        if self.quiet or total <= 0:
            yield lambda step, loss=None: None
            return
        from tqdm import tqdm

        with tqdm(total=total, desc=description, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

            def update(step: int, loss: float | None = None) -> None:
                bar.update(step - bar.n)
                if loss is not None:
                    bar.set_postfix(loss=f"{loss:.3e}", refresh=False)

            yield update


QUIET = Reporter(quiet=True)
