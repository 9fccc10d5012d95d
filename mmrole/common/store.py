"""Results that survive kills: an append-only journal keyed by item, atomic file writes, and one
run at a time per output folder.

Every long-running script writes each finished item to a journal (one JSON object per line,
flushed and fsynced) the moment it is done, and writes its final output files atomically from
the journal. A rerun reads the journal and skips what is done; a kill loses at most the items
in flight; a torn last line (killed mid-write) is ignored and redone. A damaged line that is not
the last is not a torn write: the journal is refused (CorruptJournal), naming file and line.
A write that fails (a full disk) leaves nothing half-written: the temporary file is removed, a
partly appended journal line is cut off again, and the OSError names the file.

A script claims its output folder (`claim_output_folder`) before its first request: the folder is
checked writable and locked (FolderLock: a second run on it refuses and names the holder; the lock of
a killed run is taken over), and temporary files that killed atomic writes left there are removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, ContextManager, Dict, Hashable, Iterable, Iterator, List, Optional, TextIO, Tuple, Union

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


TEMP_SUFFIX = ".tmp"
# What _atomic_writer's temporary files are called: "." + the target's name + "." + mkstemp's 8 characters
# + ".tmp". Only files of exactly this shape are ever removed as leftovers of a killed write.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def _naming(error: OSError, path: Path) -> OSError:
    """The same error, naming the file it was about (a failed write() does not say which file)."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


@contextlib.contextmanager
def _atomic_writer(path: PathLike, mode: str) -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _final_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _naming(error, path) from error
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


def atomic_write_json(path: PathLike, obj: Any, *, indent: Optional[int] = 4, final_newline: bool = True) -> None:
    """THE JSON writer of the project: non-ASCII kept readable (the published files use ensure_ascii=False,
    indent 4), written atomically. final_newline=False writes the files the original scripts wrote without one
    (answers and reviews files, the raw MMRole-Data layout), byte for byte."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + ("\n" if final_newline else ""))


def atomic_write_jsonl(path: PathLike, records: Iterable[Any]) -> None:
    """JSON lines (one record a line, non-ASCII kept readable), written atomically: the skip and reject lists."""
    atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


class CorruptJournal(ValueError):
    """A journal line that is not JSON and is not the last line: damage, not a torn write."""

    def __init__(self, path: PathLike, line: int):
        why = ("damaged (not JSON, and not the last line, so not a write cut by a kill): nothing of this journal "
               "was used; repair or delete that line, then rerun")
        self.reason = f"line {line} is {why}"
        super().__init__(f"{path}:{line}: journal line {why}")
        self.path = str(path)
        self.line = line


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
                    raise CorruptJournal(self.path, number)
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
        """Add a record; if the write fails (e.g. a full disk), what was written of it is cut off again, so
        the journal never holds a partial line followed by later ones, and the OSError names the journal."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        key = self.key_of(record)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as error:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    raise _naming(error, self.path) from error
            finally:
                os.close(fd)
            self._records[key] = record


# --- one run per output folder ---------------------------------------------------------------------

LOCK_NAME = ".mmrole.lock"


class FolderBusy(RuntimeError):
    """Another run holds the output folder."""


def _holder_text(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "holder not recorded"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, {holder.get('command', '?')}, "
            f"since {holder.get('since', '?')}")


class FolderLock:
    """One run at a time in a folder: an exclusive flock on FOLDER/.mmrole.lock, which records the holder
    (pid, host, command, start). The kernel releases the lock when its process ends, however it ends, so
    the lock of a killed run is simply taken over (and `took_over` says whose it was). The file is removed
    on release; a run that opened it just before is not fooled (it locks the file that is there)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.took_over: Optional[str] = None
        self._fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderBusy(f"another run is using it ({_holder_text(holder)}); two runs on one folder would "
                                 "do every item twice: wait for it to end, or use another folder") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # the holder released and removed it meanwhile: lock the new one
                current = False
            if current:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous is not None:
            self.took_over = _holder_text(previous)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": os.path.basename(sys.argv[0] or "python"),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> Optional[dict]:
    """The holder recorded in the lock file: None when it is empty, {} when it cannot be read."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return {}
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {}


def remove_stale_temp_files(folder: PathLike, recursive: bool = False) -> List[Tuple[Path, int]]:
    """Remove the temporary files that killed atomic writes left in `folder` (only files named as
    _atomic_writer names them); returns each with its size. Call it only while holding the folder's lock:
    another run's write in progress would look the same."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*" + TEMP_SUFFIX) if recursive else folder.glob(".*" + TEMP_SUFFIX)
    removed = []
    for path in candidates:
        if _TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                removed.append((path, size))
    return removed


class ClaimedFolder:
    """An output folder this run holds (see claim_output_folder); `notes` say what was found there."""

    def __init__(self, lock: FolderLock, removed: List[Tuple[Path, int]]):
        self.lock = lock
        self.notes: List[str] = []
        if lock.took_over:
            self.notes.append(f"{lock.folder}: took over the lock of a run that ended without releasing it "
                              f"({lock.took_over})")
        if removed:
            size = sum(size for _, size in removed)
            self.notes.append(f"{lock.folder}: removed {len(removed)} temporary file(s) left by killed writes "
                              f"({size} bytes): " + ", ".join(str(p.relative_to(lock.folder)) for p, _ in removed[:5]))

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> "ClaimedFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_output_folder(folder: PathLike, temp_folders: Iterable[Tuple[PathLike, bool]] = ()) -> ClaimedFolder:
    """Make `folder` this run's before any work: created if missing, refused if it is a file, checked
    writable (a file is created and removed in it), locked against a second run (FolderBusy names the
    holder), and cleared of temporary files of killed writes in it and in `temp_folders` ((path,
    recursive) pairs of the subfolders the run writes to). OSError names the folder otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        probe_fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write in it: {e.strerror}", str(folder)) from None
    os.close(probe_fd)
    os.unlink(probe)
    lock = FolderLock(folder).acquire()
    try:
        removed = remove_stale_temp_files(folder)
        for path, recursive in temp_folders:
            removed += remove_stale_temp_files(path, recursive)
    except BaseException:
        lock.release()
        raise
    return ClaimedFolder(lock, removed)
