"""Progress reporting: one tqdm bar on stderr counting bytes and tensors, for the long reads and writes (export's
tensor files, ``verify``, ``to_graph_module``).

The policy lives here and nowhere else. ``progress=None`` (the default everywhere, "auto") draws a bar only when
``sys.stderr`` is a terminal, and only once the work has run for :data:`DELAY_S` seconds, so short work prints
nothing even on a terminal; ``progress=True`` draws it at once, on whatever ``sys.stderr`` is (a pipe, a file, a
captured stream), short work included; ``progress=False`` never draws one.

The loops that do the work know nothing of tqdm: they take a plain callback, ``on_progress(nbytes, ntensors)``,
called with the bytes and the tensors finished since the last call, and never with a bar. Reporting does not change
what is read or written.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["DELAY_S", "OnProgress", "bar", "check_progress"]

#: Seconds of work before an automatic bar (``progress=None``) appears; shorter work shows nothing.
DELAY_S = 1.0

#: ``on_progress(nbytes, ntensors)``: bytes and tensors finished since the previous call.
OnProgress = Callable[[int, int], None]

#: The size assumed for a terminal that reports 0 columns or 0 lines (a pseudo-terminal nobody sized), where tqdm
#: would otherwise draw nothing at all.
_UNSIZED = os.terminal_size((80, 24))

_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B{postfix} [{elapsed}<{remaining}, {rate_fmt}]"


def check_progress(progress: object) -> None:
    """Raise TypeError unless ``progress`` is None, True or False (a typo such as ``progress="yes"`` is not
    silently taken as true)."""
    if progress is not None and progress is not True and progress is not False:
        raise TypeError(f"progress must be None (a bar when stderr is a terminal), True or False, got "
                        f"{progress!r:.60}")


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _size(stream: TextIO) -> os.terminal_size | None:
    """The terminal's size, or None when the stream is not a terminal."""
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):  # no fileno (a captured stream), closed, or not a terminal
        return None


class _Bar:
    """The callback handed to the work loops: advances a tqdm bar in bytes and its tensor counter."""

    def __init__(self, desc: str, total_bytes: int, total_tensors: int, stream: TextIO, delay: float):
        from tqdm import tqdm  # imported when a bar is drawn: quiet runs never pay for it

        self.tensors = 0
        self.total_tensors = total_tensors
        size = _size(stream)
        sized = {}
        if size is not None and not (size.columns and size.lines):
            sized = {"ncols": size.columns or _UNSIZED.columns, "nrows": size.lines or _UNSIZED.lines}
        self.tqdm = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, file=stream, delay=delay,
                         dynamic_ncols=not sized, bar_format=_FORMAT, postfix=self._postfix(), **sized)

    def _postfix(self) -> str:
        return f"{self.tensors}/{self.total_tensors} tensors"

    def __call__(self, nbytes: int, ntensors: int) -> None:
        if ntensors:
            self.tensors += ntensors
            self.tqdm.set_postfix_str(self._postfix(), refresh=False)
        self.tqdm.update(nbytes)

    def close(self) -> None:
        self.tqdm.close()


@contextlib.contextmanager
def bar(desc: str, total_bytes: int, total_tensors: int, progress: bool | None) -> Iterator[OnProgress | None]:
    """A progress callback for work of ``total_bytes`` bytes in ``total_tensors`` tensors, or None where no bar
    is to be drawn (pass it on as is: the loops skip a None callback).

    Args:
        desc: the bar's label (e.g. ``"export"``, ``"verify"``).
        total_bytes, total_tensors: what the work will have done when it finishes.
        progress: None (auto), True or False; see the module docstring.

    Raises:
        TypeError: ``progress`` is not None, True or False.
    """
    check_progress(progress)
    stream = sys.stderr
    if progress is False or stream is None or (progress is None and not _is_terminal(stream)):
        yield None
        return
    b = _Bar(desc, total_bytes, total_tensors, stream, DELAY_S if progress is None else 0.0)
    try:
        yield b
    finally:
        b.close()
