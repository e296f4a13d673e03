"""The lab's progress output: live bars on a terminal, one line per phase otherwise (CI logs, `make demo > log`)."""

import sys
import time
from functools import partialmethod

from tqdm.auto import tqdm


# when the lab's command began (its first import of this module): the start of its start-up phase (imports, world)
STARTED = time.perf_counter()
QUIET = False  # set in the lab's worker processes (`lab.parallel`): their parent draws the bars


def interactive() -> bool:
    """Whether both stdout and stderr are terminals: only then are live progress bars shown."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def bar(iterable=None, **kwargs):
    """A tqdm bar, disabled (silent) when the output is not a terminal."""
    return tqdm(iterable, disable=QUIET or not interactive(), **kwargs)


def silence_other_bars():
    """Silences every tqdm bar that does not set `disable` itself (the trainers', DMC's, generation's); returns a
    function that undoes it.

    Gives `tqdm.__init__` the default `disable=True`, as `TQDM_DISABLE=1` would have had tqdm been imported after it.
    """
    import tqdm.std

    original = tqdm.std.tqdm.__dict__["__init__"]
    tqdm.std.tqdm.__init__ = partialmethod(tqdm.std.tqdm.__init__, disable=True)

    def restore():
        tqdm.std.tqdm.__init__ = original

    return restore
