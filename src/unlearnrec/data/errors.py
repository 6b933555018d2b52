"""Errors raised on bad input data; each names the file, the line and the reason."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file (or an in-memory split) is malformed.

    The message always starts with the file (and line, when known) so a user can go straight to it.
    """

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + reason)


class UnknownDatasetError(KeyError):
    """A dataset name that the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataWarning(UserWarning):
    """Data that loads but may not be what the user meant (the message names the file and line)."""
