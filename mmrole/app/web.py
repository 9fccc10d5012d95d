"""The Gradio app: the chat page and the evaluation browser as two tabs of one page (the logic of each is in
chat_page.py and browser_page.py; this module only wires it to components).

Element ids (`elem_id`) name every control the tests drive. Opening the page with a browser view's query
(`?tab=eval&a=...&sample=...`) selects the browser's tab and shows that view; every change of the view writes its
query into the address bar (history.replaceState) and into the "link to this view" box.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import gradio as gr

from .browser_page import (SAMPLE_HEADERS, TABLE_HEADERS, View, choices_of, default_view, detail_html,
                           problems_html, published_rows, sample_image, sample_rows, selected_samples, table_rows,
                           view_from_controls, view_values)
from .chat_page import FROM_FOLDER, MODE_LABELS, WRITTEN, ChatPage, ChatState, Setup, status_html
from .conversation import HUMAN_ROLE
from .evaluation import EvalFolder, overall_rows
from .uploads import UploadError

CSS = """
.plain { white-space: pre-wrap; }
.status-error { color: #b00020; font-weight: 600; }
.status-warning { color: #8a5300; font-size: 0.9em; }
table.answers { width: 100%; table-layout: fixed; border-collapse: collapse; }
table.reviews th:first-child { width: 11em; }
table.answers td, table.answers th { vertical-align: top; text-align: left; padding: 6px; border: 1px solid #ddd; }
table.answers td.review { font-size: 0.9em; }
.score { font-weight: 600; margin-bottom: 4px; }
"""
# The address bar follows the view: the link reopens it.
LINK_JS = """(query) => {
  const url = window.location.origin + window.location.pathname + (query ? "?" + query : "");
  window.history.replaceState(null, "", url);
  return url;
}"""
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # system fonts: the page loads nothing from the internet


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])


def build_app(chat: ChatPage, folder: Optional[EvalFolder], image_dir: Optional[Path], *,
              concurrency: int = 16) -> gr.Blocks:
    """The whole page. concurrency: turns in progress at once (the engine batches them)."""
    with gr.Blocks(title="MMRole", analytics_enabled=False) as app:
        gr.Markdown("## MMRole: talk with a character about an image, or browse an evaluation")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Chat with a character", id="chat", elem_id="chat-tab"):
                _chat_tab(chat, concurrency)
            with gr.Tab("Evaluation browser", id="eval", elem_id="eval-tab"):
                browser = _BrowserTab(folder, image_dir)
        browser.wire_load(app, tabs)
    app.queue(default_concurrency_limit=concurrency)
    return app


# --- chat --------------------------------------------------------------------------------------------

def _chat_tab(page: ChatPage, concurrency: int) -> None:
    state = gr.State(ChatState())
    with gr.Row():
        with gr.Column(scale=1):
            setup = _setup_controls(page)
            image_pick = gr.Dropdown(page.book.pickable_images(), value=None, label="Pick an image of the data",
                                     elem_id="image-pick")
            upload = gr.File(file_types=["image"], label="or upload an image", elem_id="upload")
            preview = gr.Image(label="The image", interactive=False, elem_id="preview", height=220,
                               buttons=["fullscreen"])
            greedy = gr.Checkbox(value=page.greedy, label="greedy decoding (as inference.py --no_random)",
                                 elem_id="greedy")
            max_new = gr.Slider(1, 2048, value=page.max_new_tokens, step=1, label="max new tokens",
                                elem_id="max-new-tokens")
        with gr.Column(scale=2):
            backend = page.replies.describe() if page.replies else "no model (start with --model_path or --base_url)"
            gr.Markdown(f"Replies from: {backend}", elem_id="backend")
            chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", render_markdown=False, height=460,
                                 feedback_options=None, buttons=["copy", "copy_all"])
            status = gr.HTML(status_html(), elem_id="chat-status")
            message = gr.Textbox(label="Your message", elem_id="message", lines=2)
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                opens = gr.Button("Let the character open (inter-role)", elem_id="character-opens")
                new = gr.Button("New conversation", elem_id="new-conversation")
            with gr.Accordion("The exact prompt (what the evaluation sends for this turn)", open=False,
                              elem_id="prompt-accordion"):
                prompt = gr.Textbox(lines=12, max_lines=40, show_label=False, interactive=False, elem_id="prompt",
                                    buttons=["copy"])
    card, partner = setup["card"], setup["partner"]
    setup_inputs = [setup[name] for name in ("mode", "source", "character", "written_name", "written_script",
                                             "written_profile", "partner")]

    def on_setup(state: ChatState, *values):
        choice = Setup(*values)
        partners = page.partner_choices(choice)
        value = choice.partner if choice.partner in partners else None
        choice.partner = value
        state.turns = []
        written = gr.update(open=True) if choice.source == WRITTEN else gr.update()
        from_folder = gr.update(interactive=choice.source != WRITTEN)  # one character at a time
        return (state, page.card(choice), gr.update(choices=partners, value=value), [], status_html(), "", written,
                from_folder)

    setup_outputs = [state, card, partner, chatbot, status, prompt, setup["written_box"], setup["character"]]
    for control in (setup["mode"], setup["source"], setup["character"], partner):
        control.input(on_setup, [state, *setup_inputs], setup_outputs)
    for control in (setup["written_name"], setup["written_script"], setup["written_profile"]):
        control.blur(on_setup, [state, *setup_inputs], setup_outputs)

    def on_image(state: ChatState, picked: Optional[str], uploaded: Optional[str], source: str):
        """A picked or uploaded image starts a new conversation about it; the upload box is emptied either way, ready
        for the next upload (the preview shows the image in use)."""
        try:
            image = page.picked_image(picked) if source == "pick" else page.uploaded_image(uploaded)
        except UploadError as e:
            return state, gr.update(), status_html(str(e)), gr.update(), None
        state.image, state.turns = image, []
        return state, _picture(image.path), status_html(), [], None

    image_outputs = [state, preview, status, chatbot, upload]
    image_pick.input(lambda s, p: on_image(s, p, None, "pick"), [state, image_pick], image_outputs)
    upload.upload(lambda s, u: on_image(s, None, u, "upload"), [state, upload], image_outputs)

    def run_turn(message_text: Optional[str], state: ChatState, *values):
        *setup_values, greedy_value, max_new_value = values
        for shown, status_value, prompt_value, kept in page.turn(state, Setup(*setup_values), message_text,
                                                                 greedy_value, max_new_value):
            yield shown, status_value, prompt_value, state, kept

    turn_outputs = [chatbot, status, prompt, state, message]
    turn_inputs = [state, *setup_inputs, greedy, max_new]
    for trigger in (send.click, message.submit):
        trigger(run_turn, [message, *turn_inputs], turn_outputs, concurrency_limit=concurrency)
    opens.click(lambda *v: (yield from run_turn(None, *v)), turn_inputs, turn_outputs, concurrency_limit=concurrency)
    new.click(lambda s: (ChatState(image=s.image), [], status_html(), ""), [state], [state, chatbot, status, prompt])


def _setup_controls(page: ChatPage) -> dict:
    controls = {}
    controls["mode"] = gr.Radio(MODE_LABELS, value=HUMAN_ROLE, label="Mode", elem_id="mode")
    has_folder = bool(page.book.characters)
    controls["source"] = gr.Radio([FROM_FOLDER, WRITTEN], value=FROM_FOLDER if has_folder else WRITTEN,
                                  label="Character", elem_id="source")
    controls["character"] = gr.Dropdown(page.character_choices(), value=None, label="The character the model plays",
                                        elem_id="character")
    controls["card"] = gr.HTML(elem_id="character-card")
    controls["partner"] = gr.Dropdown([], value=None, label="The character you play (inter-role)", elem_id="partner")
    with gr.Accordion("Write a profile (choose 'written here' above)", open=not has_folder,
                      elem_id="written-profile-box") as controls["written_box"]:
        controls["written_name"] = gr.Textbox(label="Name", elem_id="written-name")
        controls["written_script"] = gr.Textbox(label="Script (e.g. Harry Potter, or Hypothetical Characters)",
                                                elem_id="written-script")
        controls["written_profile"] = gr.Textbox(label="Profile (markdown: brief introduction, personality, life "
                                                       "story, relationships, catchphrases)", lines=6,
                                                 elem_id="written-profile")
    if page.book.problems:
        gr.HTML(problems_html([f"in the profiles folder: {p}" for p in page.book.problems]),
                elem_id="profile-problems")
    return controls


# --- evaluation browser ------------------------------------------------------------------------------

class _BrowserTab:
    """The browser's components and events; without a folder, a note saying how to open one."""

    def __init__(self, folder: Optional[EvalFolder], image_dir: Optional[Path]):
        self.folder, self.image_dir = folder, image_dir
        if folder is None:
            gr.Markdown("No evaluation folder: start the app with `--eval_dir DIR` (the published layout, e.g. "
                        "`../shared/mmrole_reference` or the `eval/` folder demo.sh writes).", elem_id="no-eval")
            return
        self.view_problems = gr.HTML(problems_html(folder.problems), elem_id="eval-problems")
        self._tables(folder)
        self.controls = self._controls(folder)
        self.samples = gr.Dataframe(headers=SAMPLE_HEADERS, interactive=False, elem_id="samples", max_height=320,
                                    column_widths=["46%", "14%", "9%", "8%", "8%", "8%", "7%"],
                                    label="Samples (scores: evaluated / ground truth; click a row to show it)")
        with gr.Row():
            with gr.Column(scale=1, min_width=220):
                self.image = gr.Image(label="Image", interactive=False, elem_id="sample-image", height=260,
                                      buttons=["fullscreen"])
            with gr.Column(scale=3):
                self.detail = gr.HTML(elem_id="sample-detail")
        self.link = gr.Textbox(label="Link to this view", interactive=False, elem_id="view-link", buttons=["copy"])
        self.query = gr.Textbox(visible="hidden", elem_id="view-query")
        self.outputs = [self.samples, self.controls[-1], self.image, self.detail, self.query, self.view_problems]
        for control in self.controls:
            control.input(self.show, self.controls, self.outputs).then(None, [self.query], [self.link], js=LINK_JS)
        self.samples.select(self.pick_row, self.controls, self.outputs).then(None, [self.query], [self.link],
                                                                             js=LINK_JS)

    def _tables(self, folder: EvalFolder) -> None:
        with gr.Accordion("Table 5 and the radar chart", open=True):
            if not folder.table:
                gr.Markdown("No result CSVs here yet (`{in,out}-test_results/<model>/`, written by "
                            "`eval/RM_result.py`), so no Table 5: the samples below show what there is.",
                            elem_id="no-table5")
            else:
                gr.Dataframe(table_rows(folder), headers=TABLE_HEADERS, interactive=False, elem_id="table5",
                             max_height=420, column_widths=["28%"] + ["8%"] * 9,
                             label="Table 5, computed from the result CSVs as eval/report.py computes it")
                gr.Image(radar_image(folder), label="Radar chart", interactive=False, elem_id="radar", height=460,
                         buttons=["fullscreen", "download"])
            if folder.published_table:
                with gr.Accordion("table5.csv shipped with the folder", open=False):
                    gr.Dataframe(published_rows(folder), headers=TABLE_HEADERS, interactive=False,
                                 elem_id="published-table5", show_label=False)

    def _controls(self, folder: EvalFolder) -> List[gr.components.Component]:
        choices, view = choices_of(folder), default_view(folder)
        values = dict(zip(("split", "dialogue_type", "character", "metric", "model_a", "model_b", "sort", "sample"),
                          view_values(view)))
        labels = {"split": "Split", "dialogue_type": "Dialogue type", "character": "Character", "metric": "Metric",
                  "model_a": "Model A", "model_b": "Model B (side by side)", "sort": "Order"}
        controls = []
        with gr.Row():
            for name in ("split", "dialogue_type", "character", "metric"):
                controls.append(gr.Dropdown(choices[name], value=values[name], label=labels[name],
                                            elem_id=f"filter-{name}"))
        with gr.Row():
            for name in ("model_a", "model_b"):
                controls.append(gr.Dropdown(choices[name], value=values[name], label=labels[name],
                                            elem_id=f"filter-{name}"))
            controls.append(gr.Radio(choices["sort"], value=values["sort"], label=labels["sort"], elem_id="filter-sort"))
        controls.append(gr.Dropdown([], value=None, label="Sample", elem_id="filter-sample"))
        return controls

    def render(self, view: View, problems: Optional[List[str]] = None) -> list:
        """The outputs of a view: the sample list, the sample chosen (the view's, else the first selected)."""
        samples = selected_samples(self.folder, view)
        keys = [s.key for s in samples]
        if view.sample not in keys:
            view = View(**{**view.__dict__, "sample": keys[0] if keys else None})
        chosen = self.folder.samples.get(view.sample) if view.sample else None
        image, note = sample_image(chosen, self.image_dir) if chosen else (None, "")
        detail = detail_html(chosen, view, note) if chosen else "<p>No sample matches these filters.</p>"
        return [sample_rows(samples, view), gr.update(choices=keys, value=view.sample), image, detail, view.query(),
                problems_html(self.folder.problems + (problems or []))]

    def show(self, *values) -> list:
        return self.render(view_from_controls(*values))

    def pick_row(self, split, dialogue_type, character, metric, model_a, model_b, sort, sample,
                 evt: gr.SelectData) -> list:
        row = evt.row_value or []
        view = view_from_controls(split, dialogue_type, character, metric, model_a, model_b, sort, sample)
        return self.render(View(**{**view.__dict__, "sample": row[0] if row else view.sample}))

    def wire_load(self, app: gr.Blocks, tabs: gr.Tabs) -> None:
        """Opening the page with a view's query selects this tab and shows that view."""
        if self.folder is None:
            return

        def on_load(request: gr.Request):
            params = dict(request.query_params) if request is not None else {}
            view, problems = View.parse(params, self.folder)
            selected = "eval" if params.get("tab") == "eval" else "chat"
            controls = [gr.update(value=v) for v in view_values(view)[:-1]]
            return [gr.Tabs(selected=selected), *controls, *self.render(view, problems)]

        app.load(on_load, None, [tabs, *self.controls[:-1], *self.outputs]).then(
            None, [self.query], [self.link], js=LINK_JS)


def _picture(path: str):
    """An image file as a PIL image: the page gets a copy in Gradio's cache, never a path into the user's folders."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def radar_image(folder: EvalFolder):
    """The radar chart of the folder's overall rows, drawn with eval/charts.py into a temporary file (never into the
    evaluation folder) and handed to the page as an image."""
    from PIL import Image

    from ..eval.charts import radar_chart

    with tempfile.TemporaryDirectory(prefix="mmrole-app-") as scratch:
        path = Path(scratch) / "radar.png"
        radar_chart(overall_rows(folder.table), path)
        with Image.open(path) as image:
            return image.copy()
