"""Results that survive kills: an append-only journal keyed by item, and atomic file writes.

Every long-running script writes each finished item to a journal (one JSON object per line,
flushed and fsynced) the moment it is done, and writes its final output files atomically from
the journal. A rerun reads the journal and skips what is done; a kill loses at most the items
in flight; a torn last line (killed mid-write) is ignored and redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, ContextManager, Dict, Hashable, Iterator, Optional, TextIO, Tuple, Union

PathLike = Union[str, os.PathLike]
Key = Tuple[Hashable, ...]


def _process_umask() -> int:
    """The umask, read without changing it where Linux reports it (os.umask can only be read by setting it,
    which would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The mode the finished file gets: the replaced file's, or what open() would give a new file
    (mkstemp creates 0600, which would hide every output from the group and others)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_process_umask()


@contextlib.contextmanager
def _atomic_writer(path: PathLike, mode: str) -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _final_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_text_writer(path: PathLike) -> ContextManager[TextIO]:
    """A text file written in pieces that appears under `path` only once complete: readers see
    the old file or the new one, never a part; an exception or a kill leaves the old file.
    The new file keeps the replaced file's permissions (a new one gets 0666 minus the umask)."""
    return _atomic_writer(path, "w")


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` to `path` atomically (see atomic_text_writer)."""
    with atomic_text_writer(path) as f:
        f.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, with the permissions atomic_text_writer gives."""
    with _atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: PathLike, obj: Any, *, indent: Optional[int] = 4) -> None:
    """JSON with non-ASCII kept readable (the published files use ensure_ascii=False, indent 4)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + ("\n" if indent else ""))


class Journal:
    """An append-only JSON-lines log of finished items, keyed by a tuple of fields.

    >>> j = Journal(path, key_fields=("id", "metric"))
    >>> j.done(("s1", "Fluency"))        # False
    >>> j.append({"id": "s1", "metric": "Fluency", "review": "..."})
    A later record with the same key replaces the earlier one (e.g. a retried failure). Safe to
    call from several threads of one process: appends are serialised by a lock.
    """

    def __init__(self, path: PathLike, key_fields: Tuple[str, ...]):
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self._lock = threading.Lock()
        self._records: Dict[Key, dict] = {}
        self.torn_lines = 0
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def key_of(self, record: dict) -> Key:
        try:
            return tuple(record[field] for field in self.key_fields)
        except KeyError as e:
            raise KeyError(f"{self.path}: record lacks key field {e.args[0]!r}: {record!r:.200}") from None

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as f:
            text = f.read()
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # Only a kill during the last write can leave a broken line; anything else is damage.
                if any(later.strip() for later in lines[number:]):
                    raise ValueError(f"{self.path}:{number}: corrupt journal line (not the last one)")
                self.torn_lines += 1
                continue
            self._records[self.key_of(record)] = record
        if self.torn_lines or (text and not text.endswith("\n")):
            # Drop a torn tail so the next append starts on a fresh line.
            good = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records.values())
            atomic_write_text(self.path, good)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: Key) -> bool:
        return tuple(key) in self._records

    def done(self, key: Key) -> bool:
        return tuple(key) in self._records

    def get(self, key: Key) -> Optional[dict]:
        return self._records.get(tuple(key))

    def records(self) -> Iterator[dict]:
        return iter(list(self._records.values()))

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        key = self.key_of(record)
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._records[key] = record
