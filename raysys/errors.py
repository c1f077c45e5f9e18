"""User-facing errors.

A `RaysysError` is a mistake in what the user gave raysys (a file, a record, an option),
never a bug: the CLI prints its message and exits non-zero without a traceback. Anything
else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class RaysysError(Exception):
    """A user mistake, reported as one clear line by the CLI."""


class ConfigError(RaysysError):
    """A bad configuration value or override."""


class InvalidRecord(RaysysError):
    """One record of an input file is unusable.

    `source` names the file, `where` the record inside it (``line 12``, ``index 3``,
    ``task task042``). Readers raise it; with skip_invalid the pool loader records it in
    the skip report instead and goes on.
    """

    def __init__(self, source: str, where: str, reason: str):
        self.source, self.where, self.reason = str(source), where, _one_line(reason)
        super().__init__(f"{self.source}: {where}: {self.reason}")


class InvalidFile(RaysysError):
    """A whole input file is unusable (not found, not decodable, wrong shape)."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = str(source), _one_line(reason)
        super().__init__(f"{self.source}: {self.reason}")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message: library errors (pyarrow, datasets) may
    append context lines, and a user error is reported on one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _one_line(reason: str) -> str:
    # Both errors are printed as one line (and written one per line in skip reports);
    # control characters from a library's message are shown escaped.
    text = " ".join(part.strip() for part in str(reason).splitlines() if part.strip())
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
