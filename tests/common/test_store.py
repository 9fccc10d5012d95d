import json
import os
import stat

import pytest

from mmrole.common.store import Journal, atomic_write_json


def test_journal_resumes_and_later_record_wins(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, ("id", "metric"))
    j.append({"id": "a", "metric": "Fluency", "score": None})
    j.append({"id": "a", "metric": "Coherency", "score": [8, 9]})
    j.append({"id": "a", "metric": "Fluency", "score": [7, 9]})
    again = Journal(path, ("id", "metric"))
    assert len(again) == 2
    assert again.done(("a", "Coherency")) and not again.done(("b", "Coherency"))
    assert again.get(("a", "Fluency"))["score"] == [7, 9]


def test_journal_drops_torn_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "ans')
    j = Journal(path, ("id",))
    assert j.torn_lines == 1 and len(j) == 1
    j.append({"id": "c"})
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()] == ["a", "c"]


def test_journal_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"id": "a"}))
    j = Journal(path, ("id",))
    j.append({"id": "b"})
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()] == ["a", "b"]


def test_journal_corruption_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="j.jsonl:2"):
        Journal(path, ("id",))


def test_atomic_write_json_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "x.json"
    atomic_write_json(target, [{"name": "孙悟空"}])
    assert json.loads(target.read_text(encoding="utf-8")) == [{"name": "孙悟空"}]
    assert "孙悟空" in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_atomic_text_writer_keeps_old_file_on_error(tmp_path):
    from mmrole.common.store import atomic_text_writer

    target = tmp_path / "train.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_text_writer(target) as f:
            f.write("new, partial")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"]
    with atomic_text_writer(target) as f:
        f.write("new")
    assert target.read_text() == "new"


@pytest.fixture()
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_atomic_writes_get_normal_permissions_not_mkstemps_0600(tmp_path, umask_027):
    from mmrole.common.store import atomic_write_bytes, atomic_write_text

    atomic_write_text(tmp_path / "new.json", "[]")
    atomic_write_bytes(tmp_path / "new.png", b"\x89PNG")
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640  # 0666 minus the umask
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o640
    existing = tmp_path / "shared.csv"
    existing.write_text("old")
    existing.chmod(0o664)
    atomic_write_text(existing, "new")
    assert existing.read_text() == "new" and stat.S_IMODE(existing.stat().st_mode) == 0o664  # kept, not the umask's


class _FileSizeLimit:
    """Writes beyond `limit` bytes per file fail (RLIMIT_FSIZE; Python ignores SIGXFSZ, so write() gets
    EFBIG, the same OSError path as ENOSPC on a full disk). Only for the few lines inside the block."""

    def __init__(self, limit):
        import resource

        self.resource, self.limit = resource, limit

    def __enter__(self):
        self.saved = self.resource.getrlimit(self.resource.RLIMIT_FSIZE)
        self.resource.setrlimit(self.resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))

    def __exit__(self, *exc):
        self.resource.setrlimit(self.resource.RLIMIT_FSIZE, self.saved)


def test_a_journal_append_that_fails_midway_leaves_no_partial_line(tmp_path):
    import errno

    path = tmp_path / "j.jsonl"
    j = Journal(path, ("id",))
    j.append({"id": "a", "text": "short"})
    before = path.read_bytes()
    with _FileSizeLimit(len(before) + 10), pytest.raises(OSError) as failure:
        j.append({"id": "b", "text": "x" * 200})  # the first 10 bytes fit, the rest does not
    assert failure.value.errno == errno.EFBIG and failure.value.filename == str(path)  # names the journal
    assert path.read_bytes() == before and not j.done(("b",))
    j.append({"id": "c"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c"]


def test_an_atomic_write_that_fails_names_the_file_and_leaves_the_old_one(tmp_path):
    import errno

    from mmrole.common.store import atomic_write_text

    target = tmp_path / "out.json"
    target.write_text("old")
    with _FileSizeLimit(100), pytest.raises(OSError) as failure:
        atomic_write_text(target, "new" * 100)
    assert failure.value.errno == errno.EFBIG and failure.value.filename == str(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_folder_lock_refuses_a_second_holder_and_is_free_again_after_release(tmp_path):
    import socket

    from mmrole.common.store import FolderBusy, FolderLock

    first = FolderLock(tmp_path).acquire()
    with pytest.raises(FolderBusy, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
        FolderLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / ".mmrole.lock").exists()
    with FolderLock(tmp_path) as again:
        assert again.took_over is None


def test_claiming_a_folder_removes_stale_temp_files_in_the_subfolders_asked_for(tmp_path):
    from mmrole.common.store import claim_output_folder

    nested = tmp_path / "dialogues" / "in-distribution" / "comment"
    nested.mkdir(parents=True)
    (nested / ".Woody_COCO.json.a1b2c3d4.tmp").write_text("partial")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".x.jpg.a1b2c3d4.tmp").write_text("not a folder we write to")
    with claim_output_folder(tmp_path, [(tmp_path / "dialogues", True)]) as folder:
        assert not (nested / ".Woody_COCO.json.a1b2c3d4.tmp").exists()
        assert (tmp_path / "images" / ".x.jpg.a1b2c3d4.tmp").exists()
        assert "removed 1 temporary file(s) left by killed writes (7 bytes)" in folder.notes[0]
