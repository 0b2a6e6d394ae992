"""Errors a user can cause (bad data directory, bad checkpoint, too little history).

The CLI turns a :class:`ForecastError` into a one-line ``error: ...`` and exit code 2.
"""

from __future__ import annotations


class ForecastError(Exception):
    """A problem with the user's input to the forecaster (data, checkpoint or arguments)."""


class DataError(ForecastError):
    """A trace file or directory cannot be used."""


class CheckpointError(ForecastError):
    """A checkpoint file is missing, corrupt, of another format or of another version."""
