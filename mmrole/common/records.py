"""Data files of records (training samples, exports): a JSON list or JSON lines, read with every bad line named.

`read_records` is what finetune.py and data_prep/export.py read their input with: a JSON list that does not parse
cannot be split into records (DataFileError names the line and column); in JSON lines only the bad line is lost,
reported with its sample id when the id can still be read off the text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional, Tuple

from .problems import Problem
from .store import PathLike


class DataFileError(ValueError):
    """A data file that cannot be read at all (the message names the file and the place)."""


def read_records(path: PathLike) -> Tuple[List[Tuple[str, object]], List[Problem]]:
    """[(place, record)] from a JSON list ("#index") or JSON lines ("line N"); malformed lines become Problems.

    A JSON list that does not parse cannot be split into samples: DataFileError names the line and column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(f"cannot read the data file {path}: {err}") from err
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(
                f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg} "
                "(a JSON list cannot be read past an error; JSON lines files skip only the bad line)"
            ) from err
        return [(f"#{i}", record) for i, record in enumerate(records)], []
    entries, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            sample_id = _id_in_text(line) or f"at line {number}"
            problems.append(Problem(str(path), sample_id, f"malformed JSON: line {number}, column {err.colno}: {err.msg}"))
    return entries, problems


def _id_in_text(line: str) -> Optional[str]:
    """The "id" of a record that does not parse, when it can still be read off the text."""
    match = re.search(r'"id"\s*:\s*"((?:[^"\\]|\\.)*)"', line)
    return match.group(1) if match else None
