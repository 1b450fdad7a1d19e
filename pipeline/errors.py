"""Errors the driver finds before any worker starts: the user can act on each (exit code 2)."""

from __future__ import annotations


class JobSetupError(ValueError):
    """A job that cannot start as specified: bad input, output, weights, device or settings.

    The message names the thing at fault and what to do about it.
    """
