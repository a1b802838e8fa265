"""The CSV tables of the GSV-Cities and MSLS layouts, read with one-line errors."""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UserError


def read_table(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the CSV file `path` as dicts of strings; `columns` must all be present.

    A missing file, a file that is not CSV text and missing columns raise `UserError`
    naming the file (and the columns).
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist; fix --data-root or restore the file")
    try:
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            header = reader.fieldnames or []
            missing = [name for name in columns if name not in header]
            if missing:
                raise UserError(
                    f"{path} lacks the column(s) {', '.join(missing)} (it has: "
                    f"{', '.join(h or '<unnamed>' for h in header) or 'no header'}); "
                    f"restore the file as released")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path} is not a readable CSV file ({error}); restore the file "
                        f"as released") from None


def number(row: dict, column: str, path: Path, line: int, kind=float):
    """`row[column]` as `kind` (int or float); a `UserError` naming the file and line if not."""
    text = (row.get(column) or "").strip()
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{path} line {line}: {column} is {text!r}, not a number; fix the "
                        f"file") from None


def boolean(row: dict, column: str, path: Path, line: int) -> bool:
    """`row[column]` written as True/False (pandas' spelling); a `UserError` if not."""
    text = (row.get(column) or "").strip()
    if text not in ("True", "False"):
        raise UserError(f"{path} line {line}: {column} is {text!r}, not True or False; fix the "
                        f"file")
    return text == "True"
