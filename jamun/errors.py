"""Expected failures: what the command line reports as one line on stderr instead of a traceback.

A bad input (a corrupt, truncated or mismatched file; a setting that cannot work) raises
:class:`InputError`, whose message names the file or key, says what is wrong and what to do.
It is a ``ValueError``, so library callers that catch those keep working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "bad_file"]


class InputError(ValueError):
    """A missing, corrupt or inconsistent input; the message is one line a user can act on."""


def bad_file(path: Path | str, problem: str, remedy: str) -> InputError:
    """``InputError("<path>: <problem>; <remedy>")`` for a file that cannot be used as it is."""
    return InputError(f"{path}: {problem}; {remedy}")
