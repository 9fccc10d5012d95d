"""report.py: Table 5 and charts from the published per-file CSVs.

Finding (see docs/evaluation.md, "How the paper aggregated"): the published Table 5 is reproduced in every cell when a split is
the plain mean of its three dialogue-type files and In-Test weighs 3 : 1 against Out-Test. The
mean over all reviewed samples misses several cells by more than the table's rounding.
"""

import csv
import json
import math
import statistics

import pytest
from PIL import Image

from mmrole.common.metrics import ABBR_OF, DIMENSIONS, METRIC_NAMES
from mmrole.eval.report import read_table_csv, table5_rows

from tests.support.scripts import load_script

report = load_script("eval/report.py")

MODELS = ["gpt-4-turbo", "claude-3-opus", "qwen-vl-chat", "llava-next-mistral-7b", "yi-vl-6b", "mmrole-agent"]
COLUMNS = [*METRIC_NAMES, "Overall"]


def _published(mmrole_reference):
    return read_table_csv(mmrole_reference / "table5.csv")


def _unrounded(rows):
    return {row.label: dict(row.scores, Overall=row.overall) for row in rows}


@pytest.fixture(scope="module")
def published_report(mmrole_reference, tmp_path_factory):
    """report.py on the six published models, default settings (intervals, comparisons, audit): run once."""
    output = tmp_path_factory.mktemp("published_report")
    args = ["--eval_dir", str(mmrole_reference), "--models", *MODELS, "--output_dir", str(output),
            "--compare", "mmrole-agent", "llava-next-mistral-7b"]
    assert report.main(args) == 0
    return output


def test_report_reproduces_every_published_table5_cell(mmrole_reference, published_report):
    published = _published(mmrole_reference)
    ours = read_table_csv(published_report / "table5.csv")
    shared = [label for label in published if label in ours]
    # 6 models + mmrole-agent's In-Test and Out-Test rows: 8 rows x 9 columns.
    assert len(shared) == 8 and "mmrole-agent (In-Test)" in shared and "mmrole-agent (Out-Test)" in shared
    for label in shared:
        assert ours[label] == published[label], label  # equal after rounding to 3 decimals
    # Unrounded, every cell lies within the published value's rounding interval (so within +-0.001).
    unrounded = _unrounded(table5_rows(mmrole_reference, MODELS, "paper"))
    worst = max(abs(unrounded[label][c] - published[label][c]) for label in shared for c in COLUMNS)
    assert worst <= 0.0005 + 1e-12
    # Every model has both splits, so every model gets its In-Test and Out-Test rows.
    assert len(ours) == 3 * len(MODELS)
    assert "| mmrole-agent (Out-Test) | 0.992 | 0.999 |" in (published_report / "table5.md").read_text()


def test_paper_aggregation_is_three_to_one_of_plain_file_means(mmrole_reference):
    """The rule, written out by hand for one model with empty answers (llava: counts 71/72/72, 25/25/26)."""
    def file_means(split):
        folder = mmrole_reference / f"{split}-test_results" / "llava-next-mistral-7b"
        rows = [list(csv.reader(p.open()))[1] for p in sorted(folder.glob("*.csv"))]
        return [[float(x) for x in row[1:]] for row in rows]

    inn, out = file_means("in"), file_means("out")
    by_hand = [0.75 * sum(r[k] for r in inn) / 3 + 0.25 * sum(r[k] for r in out) / 3 for k in range(8)]
    row = table5_rows(mmrole_reference, ["llava-next-mistral-7b"])[0]
    assert [row.scores[name] for name in METRIC_NAMES] == pytest.approx(by_hand, abs=1e-12)


def test_mean_over_all_samples_does_not_reproduce_table5(mmrole_reference):
    """Why `paper` is the default: the count-weighted mean misses cells beyond rounding."""
    published = _published(mmrole_reference)
    unrounded = _unrounded(table5_rows(mmrole_reference, MODELS, "samples"))
    misses = {(m, c): unrounded[m][c] - published[m][c] for m in MODELS for c in COLUMNS
              if abs(unrounded[m][c] - published[m][c]) > 0.0005}
    assert len(misses) >= 20
    assert max(abs(d) for d in misses.values()) > 0.001
    assert ("llava-next-mistral-7b", "Knowledge Consistency") in misses
    # With no empty answers the In-Test and Out-Test rows agree under both aggregations.
    for split in ("In-Test", "Out-Test"):
        label = f"mmrole-agent ({split})"
        for c in COLUMNS:
            assert abs(unrounded[label][c] - published[label][c]) <= 0.0005


def test_charts_are_drawn(mmrole_reference, tmp_path, capsys):
    assert report.main(["--eval_dir", str(mmrole_reference), "--models", "mmrole-agent", "qwen-vl-chat",
                        "--output_dir", str(tmp_path), "--n_resamples", "999"]) == 0
    for name in ("radar.png", "dimensions.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 400
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.csv", "audit.json", "audit.md", "comparisons.csv", "dimensions.png", "radar.png", "ranking.md",
        "table5.csv", "table5.json", "table5.md"]
    rows = read_table_csv(tmp_path / "table5.csv")
    assert list(rows) == ["mmrole-agent", "mmrole-agent (In-Test)", "mmrole-agent (Out-Test)",
                          "qwen-vl-chat", "qwen-vl-chat (In-Test)", "qwen-vl-chat (Out-Test)"]


def _chart_rows(mmrole_reference):
    models = ["qwen-vl-chat", "mmrole-agent", "claude-3-opus"]
    return [row for row in table5_rows(mmrole_reference, models) if row.label in models]


def test_radar_plots_each_models_eight_metrics_and_the_ground_truth(mmrole_reference, tmp_path):
    from mmrole.eval.charts import radar_chart

    rows = _chart_rows(mmrole_reference)
    ax = radar_chart(rows, tmp_path / "radar.png").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "qwen-vl-chat", "mmrole-agent", "claude-3-opus", "ground truth (1.0)"]
    angles = [2 * math.pi * i / 8 for i in range(8)] + [0.0]
    for row in rows:  # a closed polygon, first metric (IA) at angle 0 and again at the end
        assert list(lines[row.label].get_xdata()) == pytest.approx(angles)
        expected = [row.scores[name] for name in METRIC_NAMES]
        assert list(lines[row.label].get_ydata()) == pytest.approx(expected + expected[:1])
    assert set(lines["ground truth (1.0)"].get_ydata()) == {1.0}
    assert [label.get_text().split("\n")[0] for label in ax.get_xticklabels()] == list(METRIC_NAMES)
    # The radius does not start at 0, and the chart says where it starts.
    low, high = ax.get_ylim()
    lowest = min(min(row.scores.values()) for row in rows)
    assert 0 < low < lowest and high > max(max(row.scores.values()) for row in rows)
    assert f"radius starts at {low:.2f}, not 0" in ax.get_title()
    assert not ax.patches and not ax.collections  # no filled areas over the lines


def test_bars_start_at_the_ground_truth_per_dimension_and_overall(mmrole_reference, tmp_path):
    from mmrole.eval.charts import dimension_bar_chart

    rows = _chart_rows(mmrole_reference)
    fig = dimension_bar_chart(rows, tmp_path / "dimensions.png")
    assert fig.get_suptitle()
    assert [ax.get_title() for ax in fig.axes] == [*DIMENSIONS, "Overall"]
    for ax, metrics in zip(fig.axes, [*DIMENSIONS.values(), ("Overall",)]):
        assert [label.get_text() for label in ax.get_xticklabels()] == (
            ["mean of 8"] if metrics == ("Overall",) else [ABBR_OF[m] for m in metrics])
        assert [bars.get_label() for bars in ax.containers] == [row.label for row in rows]
        for row, bars in zip(rows, ax.containers):
            expected = [row.overall if m == "Overall" else row.scores[m] for m in metrics]
            assert [bar.get_y() for bar in bars] == [1.0] * len(metrics)  # every bar grows from 1.0
            assert [bar.get_y() + bar.get_height() for bar in bars] == pytest.approx(expected)


def test_only_one_split_gives_one_row_and_unknown_model_is_an_error(mmrole_reference, tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    folder = eval_dir / "in-test_results" / "m"
    folder.mkdir(parents=True)
    for p in (mmrole_reference / "in-test_results" / "mmrole-agent").glob("*.csv"):
        (folder / p.name).write_bytes(p.read_bytes())
    assert report.main(["--eval_dir", str(eval_dir), "--models", "m", "--output_dir", str(tmp_path / "o")]) == 0
    rows = read_table_csv(tmp_path / "o" / "table5.csv")
    assert list(rows) == ["m"]
    assert rows["m"] == _published(mmrole_reference)["mmrole-agent (In-Test)"]
    assert report.main(["--eval_dir", str(eval_dir), "--models", "nobody", "--output_dir", str(tmp_path / "o")]) == 2
    assert "no result CSVs for model 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize("lowest, highest", [(0.78, 1.02), (0.6, 1.3), (0.93, 1.0)])
def test_radar_radius_labels_name_their_own_positions(tmp_path, lowest, highest):
    """Each radius label is drawn at the radius it names (ranges start on a 0.05 grid, labels on 0.1)."""
    from types import SimpleNamespace

    from mmrole.eval.charts import radar_chart

    scores = {name: lowest + (highest - lowest) * i / 7 for i, name in enumerate(METRIC_NAMES)}
    ax = radar_chart([SimpleNamespace(label="m", scores=scores)], tmp_path / "radar.png").axes[0]
    low, high = ax.get_ylim()
    labels = [(text.get_text(), text.get_position()[1]) for text in ax.texts]
    assert len(labels) >= 2
    for text, radius in labels:
        assert float(text) == pytest.approx(radius) and low < radius < high
    assert len({text for text, _ in labels}) == len(labels)


def _results_with_one_incomplete_file(mmrole_reference, tmp_path):
    """mmrole-agent's published CSVs as model `m`, its In-Test comment file marked as RM_result marks a file
    with 30 missing reviews."""
    eval_dir = tmp_path / "eval"
    for split in ("in", "out"):
        folder = eval_dir / f"{split}-test_results" / "m"
        folder.mkdir(parents=True)
        for p in (mmrole_reference / f"{split}-test_results" / "mmrole-agent").glob("*.csv"):
            (folder / p.name).write_bytes(p.read_bytes())
    marked = eval_dir / "in-test_results" / "m" / "comment_test.csv"
    header, row = marked.read_text(encoding="utf-8").splitlines()
    marked.write_text(f"{header},missing_reviews\r\n{row},30\r\n", encoding="utf-8")
    return eval_dir


def test_incomplete_results_are_marked_in_the_table_and_the_charts_and_exit_3(mmrole_reference, tmp_path, capsys):
    eval_dir = _results_with_one_incomplete_file(mmrole_reference, tmp_path)
    args = ["--eval_dir", str(eval_dir), "--models", "m", "--output_dir", str(tmp_path / "o")]
    assert report.main(args) == 3
    printed = capsys.readouterr()
    assert "2 row(s) built from incomplete results (see the `incomplete` column): m, m (In-Test)" in printed.err
    assert "pass --partial" in printed.err
    with open(tmp_path / "o" / "table5.csv", encoding="utf-8", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["m"]["incomplete"] == "1 incomplete file(s): in/comment_test: 30 review(s) missing or failed"
    assert rows["m (In-Test)"]["incomplete"].startswith("1 incomplete file(s)")
    assert rows["m (Out-Test)"]["incomplete"] == ""
    assert "| incomplete |" in (tmp_path / "o" / "table5.md").read_text()
    assert report.main(args + ["--partial"]) == 0  # asked for partial results: still marked
    assert "incomplete" in (tmp_path / "o" / "table5.csv").read_text().splitlines()[0]


def test_the_charts_legend_says_a_model_is_incomplete(mmrole_reference, tmp_path, monkeypatch):
    import mmrole.eval.charts as charts
    from mmrole.eval.report import write_report

    eval_dir = _results_with_one_incomplete_file(mmrole_reference, tmp_path)
    legends, draw = [], charts.radar_chart

    def radar_chart(rows, path, **kwargs):
        figure = draw(rows, path, **kwargs)
        legends.append([text.get_text() for text in figure.axes[0].get_legend().get_texts()])
        return figure

    monkeypatch.setattr(charts, "radar_chart", radar_chart)
    write_report(eval_dir, ["m"], tmp_path / "o")
    assert legends == [["m (incomplete)", "ground truth (1.0)"]]


def test_a_published_table_has_no_incomplete_column(published_report):
    header = (published_report / "table5.csv").read_text().splitlines()[0].split(",")
    assert header[:10] == "model,IA,Flu,Coh,ITR,RA,PC,KC,TC,Overall".split(",")  # the published layout first
    assert "incomplete" not in header


def test_published_in_test_rows_get_intervals_and_rows_with_out_test_say_why_not(published_report):
    """The published Out-Test results come without their reviews: rows that average them get no interval (one
    over the In-Test samples alone would look narrower than it is); the In-Test rows get theirs."""
    from mmrole.eval.report import read_table_intervals

    intervals = read_table_intervals(published_report / "table5.csv")
    assert sorted(intervals) == sorted(f"{m} (In-Test)" for m in MODELS)
    values = read_table_csv(published_report / "table5.csv")
    for label, by_column in intervals.items():
        for column, interval in by_column.items():
            assert interval.low <= values[label][column] <= interval.high, (label, column)
    with open(published_report / "table5.csv", newline="") as f:
        notes = {r["model"]: r["no_interval"] for r in csv.DictReader(f)}
    assert "out-test_reviews/mmrole-agent" in notes["mmrole-agent"] and notes["mmrole-agent (In-Test)"] == ""
    assert "| mmrole-agent (In-Test) | 1.000 [0.997, 1.004] |" in (published_report / "table5.md").read_text()


def test_published_interval_width_matches_the_normal_approximation(mmrole_reference, published_report):
    """Cross-check on real data: the Overall interval of each In-Test row is close to estimate +- 1.96 standard
    errors, the standard error computed here from the per-sample mean ratios of each file (1/3 weight each)."""
    from mmrole.eval.report import read_table_intervals

    intervals = read_table_intervals(published_report / "table5.csv")
    for model in MODELS:
        variance = 0.0
        for path in sorted((mmrole_reference / "in-test_reviews" / model).glob("*.json")):
            means = [sum(e["score"][0] / e["score"][1] for e in r["rm_review"].values()) / 8
                     for r in json.loads(path.read_text()) if r.get("rm_review")]
            variance += (1 / 3) ** 2 * statistics.variance(means) / len(means)
        interval = intervals[f"{model} (In-Test)"]["Overall"]
        assert (interval.high - interval.low) / 2 == pytest.approx(1.96 * math.sqrt(variance), rel=0.15), model


def test_intervals_need_reviews_that_give_the_results_back(mmrole_reference, tmp_path, capsys):
    """Reviews of another model beside mmrole-agent's CSVs: no interval, and the table says the files disagree."""
    eval_dir = tmp_path / "eval"
    results, reviews = eval_dir / "in-test_results" / "m", eval_dir / "in-test_reviews" / "m"
    results.mkdir(parents=True)
    reviews.mkdir(parents=True)
    for p in (mmrole_reference / "in-test_results" / "mmrole-agent").glob("*.csv"):
        (results / p.name).write_bytes(p.read_bytes())
    for p in (mmrole_reference / "in-test_reviews" / "qwen-vl-chat").glob("*.json"):
        (reviews / p.name).write_bytes(p.read_bytes())
    assert report.main(["--eval_dir", str(eval_dir), "--models", "m", "--output_dir", str(tmp_path / "o"),
                        "--n_resamples", "99"]) == 0
    with open(tmp_path / "o" / "table5.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["Overall_low"] == "" and "does not give its result CSV back" in row["no_interval"]


def test_strict_results_are_matched_by_their_reviews(mmrole_reference, tmp_path, capsys):
    """A file scored with RM_result --strict (a failed review counts as ratio 0) still gets intervals: the reviews
    give its CSV back under the strict policy."""
    from mmrole.eval.results import write_result_csvs

    reviews = tmp_path / "eval" / "in-test_reviews" / "m"
    reviews.mkdir(parents=True)
    records = json.loads((mmrole_reference / "in-test_reviews" / "yi-vl-6b" / "comment_test.json").read_text())
    records[0]["rm_review"]["Fluency"]["score"] = {}
    (reviews / "comment_test.json").write_text(json.dumps(records), encoding="utf-8")
    write_result_csvs(reviews, tmp_path / "eval" / "in-test_results" / "m", strict=True)
    assert report.main(["--eval_dir", str(tmp_path / "eval"), "--models", "m", "--output_dir", str(tmp_path / "o"),
                        "--n_resamples", "99", "--partial"]) == 0
    with open(tmp_path / "o" / "table5.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["Overall_low"]) <= float(row["Overall"]) <= float(row["Overall_high"])


PAPER_ORDER = [("claude-3-opus", "gpt-4-turbo"), ("gpt-4-turbo", "mmrole-agent"),
               ("mmrole-agent", "llava-next-mistral-7b"), ("llava-next-mistral-7b", "qwen-vl-chat"),
               ("llava-next-mistral-7b", "yi-vl-6b")]


def test_the_papers_order_holds_pair_by_pair_on_the_published_in_test_reviews(published_report):
    """docs/evaluation.md reports it: on the In-Test samples (the published Out-Test results have no reviews) every
    adjacent pair of the paper's order differs at p < 0.01, except Qwen-VL-Chat vs Yi-VL-6B (0.843 vs 0.829 in the
    paper), which no test separates."""
    with open(published_report / "comparisons.csv", newline="") as f:
        overall = {(r["model_a"], r["model_b"]): r for r in csv.DictReader(f) if r["column"] == "Overall"}
    assert len(overall) == 15  # every pair of the six

    def a_minus_b(a, b):  # (low, high, p) of A - B, whichever way round the file has the pair
        row = overall.get((a, b))
        if row is not None:
            return float(row["low"]), float(row["high"]), float(row["p_permutation"]), row["files"]
        row = overall[(b, a)]
        return -float(row["high"]), -float(row["low"]), float(row["p_permutation"]), row["files"]

    for a, b in PAPER_ORDER:
        low, _, p, files = a_minus_b(a, b)
        assert files == "in/comment_test in/human-role_test in/inter-role_test"
        assert low > 0 and p < 0.01, (a, b)
    low, high, p, _ = a_minus_b("qwen-vl-chat", "yi-vl-6b")
    assert low < 0 < high and p > 0.05
    ranking = (published_report / "ranking.md").read_text()
    for rank, model in [(1, "claude-3-opus"), (2, "gpt-4-turbo"), (3, "mmrole-agent"), (4, "llava-next-mistral-7b"),
                        (5, "qwen-vl-chat"), (5, "yi-vl-6b")]:
        assert f"| {rank} | {model} |" in ranking
    compared = (published_report / "compare_mmrole-agent_vs_llava-next-mistral-7b.md").read_text()
    assert "mmrole-agent vs llava-next-mistral-7b: 215 shared samples" in compared


def _row_with_intervals(label, centre, half_width):
    from types import SimpleNamespace

    names = [*METRIC_NAMES, "Overall"]
    scores = {name: centre + 0.01 * i for i, name in enumerate(METRIC_NAMES)}
    overall = sum(scores.values()) / len(scores)
    values = {**scores, "Overall": overall}
    intervals = {name: (values[name] - half_width, values[name] + half_width) for name in names}
    return SimpleNamespace(label=label, scores=scores, overall=overall, intervals=intervals)


def test_the_charts_draw_each_rows_intervals_where_they_are(tmp_path):
    """The dimension chart has a whisker per bar from the interval's low to its high end; the radar a segment on
    each metric's axis. Read back from the figures, not from the code's own arithmetic."""
    import numpy as np

    from mmrole.eval.charts import dimension_bar_chart, radar_chart

    rows = [_row_with_intervals("a", 0.80, 0.03), _row_with_intervals("b", 1.05, 0.05)]
    figure = dimension_bar_chart(rows, tmp_path / "dimensions.png")
    whiskers = sorted((round(float(s[0][1]), 6), round(float(s[1][1]), 6))
                      for ax in figure.axes for collection in ax.collections for s in collection.get_segments()
                      if np.isclose(s[0][0], s[1][0]))  # vertical segments: the whiskers
    expected = sorted((round(row.intervals[name][0], 6), round(row.intervals[name][1], 6))
                      for row in rows for name in [*METRIC_NAMES, "Overall"])
    assert whiskers == expected
    assert "whiskers: intervals" in figure.axes[0].get_ylabel()

    ax = radar_chart(rows, tmp_path / "radar.png").axes[0]
    segments = sorted((round(float(line.get_ydata()[0]), 6), round(float(line.get_ydata()[1]), 6))
                      for line in ax.lines if line.get_label() == "_interval")
    assert segments == sorted((round(row.intervals[name][0], 6), round(row.intervals[name][1], 6))
                              for row in rows for name in METRIC_NAMES)
    assert "bootstrap interval" in [text.get_text() for text in ax.get_legend().get_texts()]

    without = [_row_with_intervals("c", 0.9, 0.02)]
    without[0].intervals = {}
    plain = dimension_bar_chart(without, tmp_path / "plain.png")
    assert not [c for ax in plain.axes for c in ax.collections] and "whiskers" not in plain.axes[0].get_ylabel()
