"""The line reader every data file goes through, and the error it raises on malformed input."""

from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple


class DataFormatError(ValueError):
    """A data file is malformed. The message names the file and the 1-based line: "path:line: problem".

    `path` and `line` are also attributes (`line` is None for a problem with the whole file).
    """

    def __init__(self, message: str, *, path=None, line: Optional[int] = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
        self.line = line


def _error(path, lineno: Optional[int], problem: str) -> DataFormatError:
    where = os.fspath(path) if lineno is None else f"{os.fspath(path)}:{lineno}"
    return DataFormatError(f"{where}: {problem}", path=path, line=lineno)


def _read_lines(path, errors: str = "strict") -> Iterator[Tuple[int, str]]:
    """(1-based line number, line without its line ending) for each line of a UTF-8 file.

    Lines are split on "\\n" only (a stray "\\r" or U+2028 inside a sentence does not split it), and
    a line that is not valid UTF-8 raises DataFormatError naming it.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                raise _error(path, lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line.rstrip("\n").rstrip("\r")
