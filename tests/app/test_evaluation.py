"""The evaluation browser's data: the published folder read as the evaluation reads it (Table 5 equal to the paper's,
each sample's answers and reviews), the filters and the score-gap order, views as URL queries, and damaged or empty
folders named rather than fatal."""

import json
import shutil
from urllib.parse import parse_qsl

import pytest

from mmrole.app.browser_page import View, detail_html, sample_rows, selected_samples, table_rows
from mmrole.app.evaluation import load_eval_folder, score_gap, select
from mmrole.common.metrics import METRIC_NAMES

KNOWN = "in/human-role/Iron_Man_human-role-dialogue_COCO_30_7"


@pytest.fixture(scope="module")
def reference(mmrole_reference):
    return load_eval_folder(mmrole_reference)


def test_the_published_folder(reference, mmrole_reference):
    assert len(reference.samples) == 216 and reference.problems == []
    assert reference.models == ["claude-3-opus", "gpt-4-turbo", "llava-next-mistral-7b", "mmrole-agent",
                                "qwen-vl-chat", "yi-vl-6b"]
    published = {line.split(",")[0]: line.split(",")[1:]
                 for line in (mmrole_reference / "table5.csv").read_text().splitlines()[1:]}
    rows = {row[0]: row[1:] for row in table_rows(reference)}
    assert rows["mmrole-agent"] == published["mmrole-agent"]
    assert rows["mmrole-agent (In-Test)"] == published["mmrole-agent (In-Test)"]
    for model in ("gpt-4-turbo", "claude-3-opus", "qwen-vl-chat", "llava-next-mistral-7b", "yi-vl-6b"):
        assert rows[model] == published[model], model


def test_a_known_sample_shows_its_reviews(reference, mmrole_reference):
    records = json.loads((mmrole_reference / "in-test_reviews" / "gpt-4-turbo" / "human-role_test.json").read_text())
    record = next(r for r in records if r["id"] == KNOWN.split("/")[-1])
    sample = reference.samples[KNOWN]
    review = sample.outputs["gpt-4-turbo"].reviews["Personality Consistency"]
    assert review.text == record["rm_review"]["Personality Consistency"]["review"]
    assert list(review.pair) == record["rm_review"]["Personality Consistency"]["score"]
    page = detail_html(sample, View(model_a="mmrole-agent", model_b="gpt-4-turbo"))
    a, b = record["rm_review"]["Personality Consistency"]["score"]
    assert f"{a:g} vs ground truth {b:g}" in page
    assert record["conversations"][1]["answer"].replace("'", "&#x27;") in page
    assert page.count("class='metric-row'") == 8
    assert "[Iron Man]: Well, I have to say the kid&#x27;s got style." in page  # the history of the context


def test_filters_and_the_score_gap_order(reference, mmrole_reference):
    kept = select(reference, split="in", dialogue_type="comment", character="Woody", model_a="mmrole-agent")
    assert kept and all(s.type == "comment" and s.role == "Woody" for s in kept)

    def mean_ratio(record):  # straight from the file: the mean of evaluated / ground truth over the eight metrics
        ratios = [record["rm_review"][m]["score"][0] / record["rm_review"][m]["score"][1] for m in METRIC_NAMES
                  if record.get("rm_review") and len(record["rm_review"][m].get("score") or []) == 2]
        return sum(ratios) / len(ratios) if ratios else None

    scores = {}
    for model in ("mmrole-agent", "yi-vl-6b"):
        for record in json.loads((mmrole_reference / "in-test_reviews" / model / "inter-role_test.json").read_text()):
            scores.setdefault(record["id"], {})[model] = mean_ratio(record)
    expected = sorted((abs(s["mmrole-agent"] - s["yi-vl-6b"]), i) for i, s in scores.items()
                      if None not in s.values())[::-1]
    view = View(dialogue_type="inter-role", model_a="mmrole-agent", model_b="yi-vl-6b", sort="score gap")
    ordered = selected_samples(reference, view)
    assert [s.id for s in ordered[:5]] == [i for _, i in expected[:5]]
    assert score_gap(ordered[0], "all", "mmrole-agent", "yi-vl-6b") == pytest.approx(expected[0][0])
    rows = sample_rows(ordered, view)
    assert rows[0][0] == f"in/inter-role/{expected[0][1]}" and rows[0][-1] == f"{expected[0][0]:.3f}"


def test_a_view_is_its_query(reference):
    view = View(split="in", dialogue_type="human-role", character="Iron Man", metric="Fluency",
                model_a="mmrole-agent", model_b="gpt-4-turbo", sort="score gap", sample=KNOWN)
    query = dict(parse_qsl(view.query()))
    assert query["tab"] == "eval" and query["sample"] == KNOWN
    assert View.parse(query, reference) == (view, [])
    parsed, problems = View.parse({"a": "no-such-model", "metric": "Charm", "split": "in"}, reference)
    assert parsed == View(split="in", model_a=reference.models[0])
    assert sorted(problems) == [f"the link asks for a='no-such-model', which {reference.path} does not have",
                                f"the link asks for metric='Charm', which {reference.path} does not have"]


def test_damaged_and_empty_folders_are_named(tmp_path, mmrole_reference):
    for kind in ("reviews", "results"):
        for model in ("mmrole-agent", "gpt-4-turbo"):
            shutil.copytree(mmrole_reference / f"in-test_{kind}" / model, tmp_path / f"in-test_{kind}" / model)
    (tmp_path / "in-test_reviews" / "gpt-4-turbo" / "comment_test.json").write_text('[{"id": ')
    (tmp_path / "in-test_results" / "mmrole-agent" / "comment_test.csv").write_text("count,Fluency\n3,x\n")
    folder = load_eval_folder(tmp_path)
    assert len(folder.problems) == 2
    assert "gpt-4-turbo/comment_test.json: malformed JSON at line 1" in folder.problems[0]
    assert "mmrole-agent/comment_test.csv: expected the header" in folder.problems[1]
    assert folder.models == ["gpt-4-turbo", "mmrole-agent"] and len(folder.samples) == 216
    assert sum("gpt-4-turbo" in s.outputs for s in folder.samples.values()) == 144
    assert [row.label for row in folder.table] == ["gpt-4-turbo"]  # the damaged CSV costs mmrole-agent's row only

    empty = load_eval_folder(tmp_path / "in-test_results" / "gpt-4-turbo")
    assert empty.samples == {} and empty.table == []
    assert "no evaluation files here (expected the published layout" in empty.problems[0]


def test_a_folder_as_demo_sh_leaves_it(tmp_path, mmrole_reference):
    """demo.sh's eval/ folder: one model's answers with the runs' journals beside them, reviews of some files (the
    reviewer's lock file in its folder) and no result CSVs yet: shown as far as it goes, with nothing called broken."""
    answers = tmp_path / "in-test_answers" / "demo-agent"
    shutil.copytree(mmrole_reference / "in-test_answers" / "mmrole-agent", answers)
    reviews = tmp_path / "in-test_reviews" / "demo-agent"
    reviews.mkdir(parents=True)
    shutil.copy(mmrole_reference / "in-test_reviews" / "mmrole-agent" / "comment_test.json", reviews)
    for folder in (answers, reviews):
        (folder / "human-role_test.journal.jsonl").write_text('{"id": "x", "status": "ok", "answer": "a"}\n')
    (reviews / ".mmrole.lock").write_text("pid 1 host h\n")
    folder = load_eval_folder(tmp_path)
    assert folder.problems == [] and folder.models == ["demo-agent"] and folder.table == []
    published = {t: json.loads((answers / f"{t}_test.json").read_text()) for t in ("comment", "human-role")}
    assert sum(s.split == "in" for s in folder.samples.values()) == len(folder.samples) == \
        sum(len(json.loads(p.read_text())) for p in answers.glob("*_test.json"))
    comment = folder.samples[f"in/comment/{published['comment'][0]['id']}"].outputs["demo-agent"]
    assert comment.answer == published["comment"][0]["conversations"][1]["answer"] and len(comment.reviews) == 8
    human = folder.samples[f"in/human-role/{published['human-role'][0]['id']}"].outputs["demo-agent"]
    assert human.answer == published["human-role"][0]["conversations"][1]["answer"] and human.reviews == {}
