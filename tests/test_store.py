import json
import os
import stat

import pytest

from mmrole.store import Journal, atomic_write_json


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
    from mmrole.store import atomic_text_writer

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
    from mmrole.store import atomic_write_bytes, atomic_write_text

    atomic_write_text(tmp_path / "new.json", "[]")
    atomic_write_bytes(tmp_path / "new.png", b"\x89PNG")
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640  # 0666 minus the umask
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o640
    existing = tmp_path / "shared.csv"
    existing.write_text("old")
    existing.chmod(0o664)
    atomic_write_text(existing, "new")
    assert existing.read_text() == "new" and stat.S_IMODE(existing.stat().st_mode) == 0o664  # kept, not the umask's
