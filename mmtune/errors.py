"""The one exception type the CLI turns into a single line on stderr and exit code 2."""

from __future__ import annotations


class MMTuneError(ValueError):
    """Bad input or a failed precondition: the message says what was wrong and what to do."""
