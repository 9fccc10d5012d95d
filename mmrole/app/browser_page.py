"""The evaluation browser page: Table 5 and the radar chart of an evaluation folder, then sample by sample the image,
the dialogue context, each model's answer beside the ground truth and the judge's eight reviews with their scores.

A view is what the filters say (split, dialogue type, character, metric, model A, model B, order) and the sample
shown; `View.query` is its URL query, and opening the page with that query shows the same view again (`View.parse`:
a value the folder does not have is named in the page and left at its default). All file text is escaped before it
reaches the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlencode

from ..common.metrics import ABBR_OF, METRIC_NAMES
from ..common.prompts import BLOCK_SEPARATOR
from .evaluation import ALL, DIALOGUE_TYPES, SORTS, SPLITS, EvalFolder, Sample, format_score, score_gap, select

NO_MODEL = "(none)"
TAB_QUERY = ("tab", "eval")  # the query item that opens the browser's tab
_QUERY_NAMES = {"split": "split", "type": "dialogue_type", "character": "character", "metric": "metric",
                "a": "model_a", "b": "model_b", "sort": "sort", "sample": "sample"}


@dataclass(frozen=True)
class View:
    split: str = ALL
    dialogue_type: str = ALL
    character: str = ALL
    metric: str = ALL
    model_a: Optional[str] = None
    model_b: Optional[str] = None
    sort: str = SORTS[0]
    sample: Optional[str] = None

    def query(self) -> str:
        """The URL query of this view (only what differs from the defaults, and the browser's tab)."""
        default = View()
        items = [TAB_QUERY] + [(name, getattr(self, attribute)) for name, attribute in _QUERY_NAMES.items()
                               if getattr(self, attribute) not in (None, getattr(default, attribute))]
        return urlencode(items)

    @classmethod
    def parse(cls, params: Mapping[str, str], folder: EvalFolder) -> Tuple["View", List[str]]:
        """The view a URL query asks for, and a message for each value the folder does not have."""
        allowed = {"split": [ALL, *SPLITS], "dialogue_type": [ALL, *DIALOGUE_TYPES],
                   "character": [ALL, *folder.characters], "metric": [ALL, *METRIC_NAMES], "model_a": folder.models,
                   "model_b": folder.models, "sort": list(SORTS), "sample": list(folder.samples)}
        values, problems = {}, []
        for name, attribute in _QUERY_NAMES.items():
            value = params.get(name)
            if value is None:
                continue
            if value in allowed[attribute]:
                values[attribute] = value
            else:
                problems.append(f"the link asks for {name}={value!r}, which {folder.path} does not have")
        view = cls(**values)
        if view.model_a is None and folder.models:
            view = replace(view, model_a=folder.models[0])
        return view, problems


def default_view(folder: EvalFolder) -> View:
    return View(model_a=folder.models[0] if folder.models else None)


def view_from_controls(split, dialogue_type, character, metric, model_a, model_b, sort, sample) -> View:
    """A View from the page's controls (a cleared dropdown means its default)."""
    return View(split or ALL, dialogue_type or ALL, character or ALL, metric or ALL, model_a or None,
                None if model_b in (None, "", NO_MODEL) else model_b, sort or SORTS[0], sample or None)


def view_values(view: View) -> List:
    """The controls' values for a view (the inverse of view_from_controls)."""
    return [getattr(view, f.name) if f.name != "model_b" else (view.model_b or NO_MODEL) for f in fields(View)]


# --- tables ----------------------------------------------------------------------------------------

TABLE_HEADERS = ["model", *(ABBR_OF[name] for name in METRIC_NAMES), "Overall"]


def table_rows(folder: EvalFolder) -> List[List[str]]:
    """Table 5 as computed from the folder's result CSVs (eval/report.py's aggregation), 3 decimals."""
    rows = []
    for row in folder.table:
        label = row.label + (" (incomplete)" if row.incomplete else "")
        rows.append([label, *(format_score(row.scores[name]) for name in METRIC_NAMES), format_score(row.overall)])
    return rows


def published_rows(folder: EvalFolder) -> List[List[str]]:
    table = folder.published_table or {}
    return [[label, *(format_score(scores[name]) for name in METRIC_NAMES), format_score(scores["Overall"])]
            for label, scores in table.items()]


SAMPLE_HEADERS = ["sample", "character", "type", "split", "score A", "score B", "gap"]


def sample_rows(samples: List[Sample], view: View) -> List[List[str]]:
    """The samples a view selects: the scores are ratios evaluated / ground truth (of the view's metric, or the mean
    of the eight), and the gap the list is sorted by."""
    rows = []
    for sample in samples:
        scores = [sample.outputs[m].score(view.metric) if m in sample.outputs else None
                  for m in (view.model_a, view.model_b)]
        gap = score_gap(sample, view.metric, view.model_a, view.model_b) if view.model_a else None
        rows.append([sample.key, sample.role, sample.type, SPLITS[sample.split], format_score(scores[0]),
                     format_score(scores[1]) if view.model_b else "", format_score(gap)])
    return rows


def selected_samples(folder: EvalFolder, view: View) -> List[Sample]:
    return select(folder, split=view.split, dialogue_type=view.dialogue_type, character=view.character,
                  metric=view.metric, model_a=view.model_a, model_b=view.model_b, sort=view.sort)


# --- one sample ------------------------------------------------------------------------------------

def _text(text: Optional[str]) -> str:
    return "<i>(none)</i>" if text is None else f"<div class='plain'>{html.escape(text)}</div>"


def context_html(sample: Sample) -> str:
    """The dialogue context from the prompt: the conversation history and the words answered are shown; the opening
    and the profiles are folded away."""
    blocks = sample.question.split(BLOCK_SEPARATOR)
    shown, folded = blocks[-1:], blocks[:-1]
    if len(folded) > 1 and folded[-1].startswith("The conversation history"):
        shown, folded = blocks[-2:], blocks[:-2]
    return ("<details><summary>role-play prompt: opening, profiles, image information</summary>"
            + _text(BLOCK_SEPARATOR.join(folded)) + "</details>" + _text(BLOCK_SEPARATOR.join(shown)))


def _review_cell(sample: Sample, model: str, metric: str) -> str:
    output = sample.outputs.get(model)
    review = output.reviews.get(metric) if output else None
    if review is None:
        why = "not reviewed (empty answer)" if output and not (output.answer or "").strip() else "no review"
        return f"<td class='review'><i>{why}</i></td>"
    if review.pair is None:
        score = "no valid score pair"
    else:
        score = f"{review.pair[0]:g} vs ground truth {review.pair[1]:g} = {format_score(review.ratio)}"
    return f"<td class='review'><div class='score'>{html.escape(score)}</div>{_text(review.text)}</td>"


def detail_html(sample: Sample, view: View, image_note: str = "") -> str:
    """Everything about one sample: context, the answers beside the ground truth, and the reviews per metric (each
    review compares one model's answer with the ground truth: `A vs ground truth B = A/B`)."""
    models = [m for m in (view.model_a, view.model_b) if m]
    head = (f"<h3 class='sample-id'>{html.escape(sample.id)}</h3><p><b>{html.escape(sample.role)}</b> from "
            f"{html.escape(sample.script)}, talking with {html.escape(sample.other_role)} · {SPLITS[sample.split]} · "
            f"{html.escape(sample.type)} · image {html.escape(sample.image)}{html.escape(image_note)}</p>")
    names = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    answers = "".join(f"<td>{_text(sample.outputs[m].answer if m in sample.outputs else None)}</td>" for m in models)
    answer_table = (f"<table class='answers'><tr><th>ground truth</th>{names}</tr>"
                    f"<tr><td>{_text(sample.ground_truth)}</td>{answers}</tr></table>")
    metrics = METRIC_NAMES if view.metric == ALL else (view.metric,)
    rows = "".join(f"<tr class='metric-row'><th>{html.escape(metric)} ({ABBR_OF[metric]})</th>"
                   + "".join(_review_cell(sample, m, metric) for m in models) + "</tr>" for metric in metrics)
    review_table = f"<table class='answers reviews'><tr><th>metric</th>{names}</tr>{rows}</table>"
    return (f"<div id='sample-detail-body'>{head}<h4>Dialogue context</h4>{context_html(sample)}"
            f"<h4>Answers</h4>{answer_table}<h4>The judge's reviews</h4>{review_table}</div>")


def sample_image(sample: Sample, image_dir: Optional[Path]):
    """(the sample's image as a PIL image or None, a note for the page when it cannot be shown)."""
    from PIL import Image

    if image_dir is None:
        return None, " (no --image_dir: image not shown)"
    path = image_dir / sample.image
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), ""
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, f" (not shown: no readable image at {path})"


def problems_html(problems: List[str], limit: int = 30) -> str:
    """Files or items a folder could not offer, listed (escaped) as a warning; the rest of the page works."""
    if not problems:
        return "<div class='problems'></div>"
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems[:limit])
    more = f"<li>… and {len(problems) - limit} more</li>" if len(problems) > limit else ""
    return f"<div class='problems status-warning'>⚠ not shown:<ul>{items}{more}</ul></div>"


def choices_of(folder: EvalFolder) -> Dict[str, List]:
    """The dropdowns' choices."""
    return {"split": [(label, key) for key, label in [(ALL, ALL), *SPLITS.items()]],
            "dialogue_type": [ALL, *DIALOGUE_TYPES], "character": [ALL, *folder.characters],
            "metric": [ALL, *METRIC_NAMES], "model_a": folder.models, "model_b": [NO_MODEL, *folder.models],
            "sort": list(SORTS)}

