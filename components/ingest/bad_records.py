"""What ingest does with a malformed record: stop at once, or set it aside and list it.

A record is one csv row or one image. Problems with a whole file (missing, empty, no
header, misaligned with its companion file) always stop ingest: nothing sensible can be
read from it. A bad record stops ingest too unless ``ingest.on_bad_record`` is ``skip``;
then the record is left out and listed in ``quarantine.json`` with the reason, so a handful
of damaged images in a 35,000-image download does not block a run, yet none is dropped
silently.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pandas as pd

from emoflow.components.artifacts import write_json
from emoflow.components.errors import EmoFlowError

QUARANTINE_JSON = "quarantine.json"


class IngestError(EmoFlowError, ValueError):
    """A raw input file is unreadable or malformed; the message names file and row or image."""


class BadRecord(IngestError):
    """One malformed row or image; ``record`` says which row ("" when the file is the image)."""

    def __init__(self, file: Path | str, reason: str, record: str = "") -> None:
        self.file = str(file)
        self.record = record
        self.reason = reason
        super().__init__(f"{file}: {record}: {reason}" if record else f"{file}: {reason}")


def csv_row(row: int) -> str:
    """How a data row is named: its 0-based index and, for editors, its line in the file."""
    return f"row {row} (line {row + 2})"


class Quarantine:
    """Applies ``ingest.on_bad_record`` to the bad records the readers find."""

    def __init__(self, on_bad_record: Literal["error", "skip"] = "error") -> None:
        self.skip = on_bad_record == "skip"
        self.records: list[BadRecord] = []

    def set_aside(self, bad: Iterable[BadRecord]) -> None:
        """Raise the first of ``bad`` (readers pass them in file order), or keep them all."""
        bad = list(bad)
        if bad and not self.skip:
            raise bad[0]
        self.records.extend(bad)

    def write(self, path: Path) -> None:
        """The quarantine report: every record left out, where it was and why."""
        write_json(
            path,
            {
                "count": len(self.records),
                "records": [
                    {"file": r.file, "record": r.record, "reason": r.reason} for r in self.records
                ],
            },
        )


def read_csv_strings(path: Path, columns: tuple[str, ...], setting: str) -> pd.DataFrame:
    """A csv of the datasets as strings; problems of the whole file are raised here.

    ``setting`` names the params key that points at the file, so the message says what
    to fix.
    """
    with _csv_errors(path, columns, setting):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    _check_columns(path, table, columns)
    return table


def read_csv_chunks(
    path: Path, columns: tuple[str, ...], setting: str, rows: int
) -> Iterator[pd.DataFrame]:
    """The csv as strings, ``rows`` rows at a time, each chunk indexed by its file row.

    For files too large to hold as a table of strings (a 1M-image FER2013 csv is 8 GB).
    A file with a header and no rows yields one empty chunk, as ``read_csv_strings`` returns
    an empty table. Problems of the whole file are raised as by ``read_csv_strings``, and a
    row the parser rejects half-way through the file ends the iteration with an error too.
    """
    with _csv_errors(path, columns, setting):
        reader = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=rows)
    with reader:
        while True:
            with _csv_errors(path, columns, setting):
                chunk = next(reader, None)
            if chunk is None:
                return
            _check_columns(path, chunk, columns)
            yield chunk


@contextmanager
def _csv_errors(path: Path, columns: tuple[str, ...], setting: str) -> Iterator[None]:
    """pandas' and the decompressor's errors as an IngestError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise IngestError(f"{path}: file not found ({setting} in params.yaml)") from None
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path}: file is empty, expected a header {','.join(columns)}") from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except (pd.errors.ParserError, OSError, EOFError) as err:
        raise IngestError(f"{path}: not a readable csv: {err}") from None


def _not_utf8(path: Path, err: UnicodeDecodeError) -> IngestError:
    """The error for a byte that is not UTF-8, naming its line.

    The decoder's position counts from the start of pandas' read buffer, not of the file, so
    the file is read again, a line at a time, to find the first line that does not decode.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                where = csv_row(number - 2) if number > 1 else "line 1 (the header)"
                return IngestError(
                    f"{path}: {where}: byte 0x{line[bad.start]:02x} at column {bad.start + 1} "
                    "is not UTF-8 (is the file in another encoding, or damaged?)"
                )
    return IngestError(f"{path}: not a readable csv: {err}")


def _check_columns(path: Path, table: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise IngestError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"the header is {','.join(table.columns)}, expected {','.join(columns)}"
        )
