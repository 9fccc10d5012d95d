"""Chat generation: the original `chat` on every reference case, `batch_chat` against one-at-a-time answers
(continuous batching with refills, and left-padded `generate`), streaming, the stop-word processor and
generation defaults."""

import json
import threading

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList,
                          StoppingCriteriaList, TextIteratorStreamer)

import mmrole  # noqa: F401  (registers the qwen model type)
from mmrole.demo.tiny import TinySizes, write_tiny_checkpoint
from mmrole.qwen_vl.chat_format import get_stop_words_ids, make_context
from mmrole.qwen_vl.generation import continuous
from mmrole.qwen_vl.generation.chat import (FORCED_EOS_SCORE, StopWordsLogitsProcessor, continuous_batching_applies,
                                            iter_batch_chat_detailed)
from mmrole.qwen_vl.generation.continuous import DecodeTask, generate_greedy

IM_START, IM_END, EOD = 151644, 151645, 151643
REF_MAX_NEW_TOKENS = 24  # what the reference chats used (greedy)


@pytest.fixture(scope="module")
def expected(qwen_reference):
    return json.loads((qwen_reference / "expected.json").read_text())


@pytest.fixture(scope="module")
def ref_model(qwen_reference):
    return AutoModelForCausalLM.from_pretrained(qwen_reference / "tiny-qwen-vl-chat", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(qwen_reference):
    return AutoTokenizer.from_pretrained(qwen_reference / "tiny-qwen-vl-chat")


@pytest.fixture
def in_reference_dir(qwen_reference, monkeypatch):
    """The prompts name their images relative to the reference folder, as the original run did."""
    monkeypatch.chdir(qwen_reference)


def _history(case):
    return [tuple(turn) for turn in case["history"]] if case["history"] else None


def _record_generation(model, monkeypatch):
    """Make every `generate` call also return its processed scores, and record them with the prefill's NTK
    alphas; the caller (chat) still receives the plain id tensor."""
    calls = []
    original = model.generate

    def spy(*args, **kwargs):
        alphas = []
        hook = model.transformer.register_forward_hook(lambda module, args, out: alphas.append(out.ntk_alpha.tolist()))
        try:
            out = original(*args, output_scores=True, return_dict_in_generate=True, **kwargs)
        finally:
            hook.remove()
        calls.append({"sequences": out.sequences, "scores": out.scores, "prefill_ntk_alpha": alphas[0]})
        return out.sequences

    monkeypatch.setattr(model, "generate", spy)
    return calls


def _score_problems(name, scores, reference_steps):
    """Each step's processed scores against the reference's top 5 (ids and values)."""
    problems = []
    if len(scores) != len(reference_steps):
        problems.append(f"{name}: {len(scores)} steps, the reference has {len(reference_steps)}")
    for step, (step_scores, stored) in enumerate(zip(scores, reference_steps)):
        top = step_scores[0].topk(5)
        stored_values = torch.tensor(stored["top5_scores"])
        if not torch.allclose(top.values, stored_values, atol=1e-4):
            problems.append(f"{name} step {step}: top-5 scores {top.values.tolist()} != {stored['top5_scores']}")
        # An id may only differ from the reference where the scores around it tie within the tolerance.
        gaps = (stored_values[:-1] - stored_values[1:]).tolist() + [float("inf")]
        for rank, (got, want) in enumerate(zip(top.indices.tolist(), stored["top5_ids"])):
            near_tie = min(gaps[rank], gaps[rank - 1] if rank else float("inf")) < 1e-4
            if got != want and not near_tie:
                problems.append(f"{name} step {step}: rank {rank} id {got} != {want}")
    return problems


@pytest.mark.usefixtures("in_reference_dir")
def test_chat_matches_every_reference_case_with_its_scores_at_every_step(ref_model, tokenizer, expected,
                                                                         monkeypatch):
    """Prompt, generated ids, reply, history, the prefill's NTK alpha and the processed scores of every step
    (after the stop-word processor: a forced <|endoftext|> scores 2**15) of all reference chats."""
    calls = _record_generation(ref_model, monkeypatch)
    problems = []
    assert len(expected["chat"]) == 6  # every reference chat is checked (an emptied reference must not pass)
    for case in expected["chat"]:
        response, history = ref_model.chat(tokenizer, case["query"], history=_history(case), system=case["system"],
                                           do_sample=False, max_new_tokens=REF_MAX_NEW_TOKENS)
        sequence = calls[-1]["sequences"][0]
        assert sequence[: case["context_len"]].tolist() == case["context_tokens"], case["name"]
        assert sequence[case["context_len"]:].tolist() == case["generated_ids"], case["name"]
        assert response == case["response"], case["name"]
        assert [list(turn) for turn in history] == case["history_after"], case["name"]
        assert calls[-1]["prefill_ntk_alpha"] == [case["prefill_ntk_alpha"]], case["name"]
        problems += _score_problems(case["name"], calls[-1]["scores"], case["per_step_processed_scores"])
    assert not problems, "\n".join(problems)
    stop_case = next(c for c in expected["chat"] if c["generated_ids"][-1] == EOD)
    assert stop_case["generated_ids"][-2:] == [IM_END, EOD]
    assert stop_case["per_step_processed_scores"][-1]["top5_scores"][0] == FORCED_EOS_SCORE


@pytest.mark.usefixtures("in_reference_dir")
def test_batch_chat_gives_each_query_its_one_at_a_time_answer(ref_model, tokenizer, expected):
    """Six chats in one left-padded batch: prompts of 30..334 tokens (both sides of seq_length 300, NTK
    alphas 1 and 3), two systems, histories, images; and in chunks of 2 (grouped by length)."""
    cases = expected["chat"]
    assert len(cases) == 6
    args = dict(histories=[_history(c) for c in cases], systems=[c["system"] for c in cases],
                do_sample=False, max_new_tokens=REF_MAX_NEW_TOKENS)
    queries = [c["query"] for c in cases]
    results = ref_model.batch_chat_detailed(tokenizer, queries, **args)
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        assert result.generated_ids == case["generated_ids"], case["name"]
        assert result.response == case["response"], case["name"]
        assert result.prompt_tokens == case["context_len"]
        assert result.completion_tokens == len(case["generated_ids"])
        assert result.finish_reason == ("stop" if case["generated_ids"][-1] == EOD else "length")
    # Greedy answers are prefixes of longer ones: 6 new tokens are enough to check the chunked path.
    args["max_new_tokens"] = 6
    chunked = ref_model.batch_chat_detailed(tokenizer, queries, batch_size=4, **args)
    assert [r.generated_ids for r in chunked] == [c["generated_ids"][:6] for c in cases]


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory):
    """A tiny random checkpoint with seq_length 48, so short prompts already cross it (alphas up to 7)."""
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny48"), seed=3, sizes=TinySizes(seq_length=48))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.mark.usefixtures("in_reference_dir")
@pytest.mark.parametrize("path", ["continuous", "generate"])
def test_batch_chat_equals_chat_on_unseen_prompts(short_context_model, path):
    """Greedy batch_chat decodes with continuous batching; with a stopping criterion (as the server passes)
    it takes left-padded `generate` calls. Both give every query its one-at-a-time answer."""
    model, tokenizer = short_context_model
    extra = {} if path == "continuous" else {"stopping_criteria": StoppingCriteriaList()}
    assert continuous_batching_applies(model, tokenizer, do_sample=False, max_new_tokens=6, **extra) == (
        path == "continuous")
    image = "Picture 1: <img>images/scene_300x200.png</img>\n"
    two_images = image + "Picture 2: <img>images/portrait_200x300.png</img>\n"
    queries = ["Hi.", "Describe the sea " * 30, image + "What is this?", "Tell me a joke about " + "cats " * 60,
               image + "And now? " * 5, two_images + "Which one is brighter?"]
    histories = [None, [("Who are you?", "A pirate.")], None, [(image + "Look.", "Nice.")], None, None]
    systems = ["You are a helpful assistant.", "You are Captain Flint.", "Be brief.",
               "You are a helpful assistant.", "You are a dedicated role-playing assistant.", "Be brief."]
    alone = [model.chat(tokenizer, q, history=list(h) if h else None, system=s, do_sample=False, max_new_tokens=6)[0]
             for q, h, s in zip(queries, histories, systems)]
    together = model.batch_chat(tokenizer, queries, histories=histories, systems=systems, do_sample=False,
                                max_new_tokens=6, **extra)
    assert together == alone
    single = model.batch_chat(tokenizer, queries[3:4], histories=histories[3:4], systems=systems[3:4],
                              do_sample=False, max_new_tokens=6, **extra)
    assert single == alone[3:4]


def _record_chat_ids(model, monkeypatch):
    """The new ids of every `generate` call `chat` makes, in a list that fills as chat is called."""
    generated = []
    original = model.generate

    def spy(input_ids, **kwargs):
        out = original(input_ids, **kwargs)
        generated.append(out[0, input_ids.shape[1]:].tolist())
        return out

    monkeypatch.setattr(model, "generate", spy)
    return generated


def _watch_forwards(model):
    """Lists that fill with (kind, rows, tokens) of every forward of the language model (kind "step" for a decoding
    step, fed ids; "prefill" for prompt pieces, fed embeddings) and with the number of images of every vision-tower
    call; and the hooks to remove."""
    shapes, encodings = [], []

    def record(module, args, kwargs):
        fed = kwargs.get("input_ids")
        kind, fed = ("step", fed) if fed is not None else ("prefill", kwargs["inputs_embeds"])
        shapes.append((kind, *fed.shape[:2]))

    hooks = [model.transformer.register_forward_pre_hook(record, with_kwargs=True),
             model.transformer.visual.register_forward_hook(
                 lambda module, args, out: encodings.append(len(args[0])))]
    return shapes, encodings, hooks


class _ScoreRecorder(LogitsProcessor):
    """Records, at every step, the top-5 scores and ids and the logsumexp of all scores it is given. The
    random tiny model's greedy ids hardly depend on positions or the NTK factor; its scores do."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        top = scores[0].topk(5)
        self.steps.append((top.values, top.indices.tolist(), torch.logsumexp(scores[0], dim=0)))
        return scores


def _score_differences(name, got, want):
    problems = [] if len(got) == len(want) else [f"{name}: {len(got)} steps, chat took {len(want)}"]
    for step, ((values, ids, total), (want_values, want_ids, want_total)) in enumerate(zip(got, want)):
        if not torch.allclose(values, want_values, atol=1e-4) or not torch.allclose(total, want_total, atol=1e-4):
            problems.append(f"{name} step {step}: top-5 {values.tolist()} / logsumexp {float(total)}, chat "
                            f"{want_values.tolist()} / {float(want_total)}")
        elif ids != want_ids and torch.diff(want_values).abs().min() > 1e-4:  # ids may swap only in near-ties
            problems.append(f"{name} step {step}: top-5 ids {ids}, chat {want_ids}")
    return problems


IMAGE = "Picture 1: <img>images/scene_300x200.png</img>\n"
TWO_IMAGES = IMAGE + "Picture 2: <img>images/portrait_200x300.png</img>\n"


@pytest.mark.usefixtures("in_reference_dir")
def test_continuous_batching_refills_rows_and_each_request_equals_its_chat(short_context_model, monkeypatch):
    """Nine requests through 3 rows: prompts of 20 to 300 tokens (seq_length 48: NTK alphas 1 to 7, log-n),
    images, a history, each its own max_new_tokens (1 to 12) and some their own stop word, so rows end at very
    different steps and are refilled; a long prompt arrives after shorter ones. The cache keeps only 2 spare
    columns, so its columns are moved and its buffers regrown many times. Every request's ids equal its
    one-at-a-time `chat`, and so do the scores of every step (top 5 and logsumexp, to 1e-4)."""
    model, tokenizer = short_context_model
    requests = [  # (query, history, max_new_tokens, stop at the chat's own n-th token or None)
        ("Hi.", None, 12, None),
        (IMAGE + "What is this?", None, 2, None),
        (IMAGE + "And now? " * 5, None, 12, None),
        ("Describe the sea " * 30, None, 1, None),
        (TWO_IMAGES + "Which one is brighter?", None, 12, 2),
        ("Tell me a joke about " + "cats " * 60, [(IMAGE + "Look.", "Nice.")], 7, None),
        ("Bye.", None, 12, 1),
        (IMAGE + "Once more.", None, 4, None),
        ("A long story " * 70, None, 12, None),
    ]
    chat_ids = _record_chat_ids(model, monkeypatch)
    expected, chat_scores, tasks, task_scores = [], [], [], []
    for query, history, max_new_tokens, stop_at in requests:
        settings = dict(system="Be brief.", do_sample=False, max_new_tokens=max_new_tokens)
        stops = []
        if stop_at is not None:  # a stop word the model really generates: its own token at that position
            model.chat(tokenizer, query, history=list(history or []), **settings)
            stops = [[chat_ids[-1][stop_at]]]
        chat_scores.append(_ScoreRecorder())
        model.chat(tokenizer, query, history=list(history or []), stop_words_ids=stops or None,
                   logits_processor=LogitsProcessorList([chat_scores[-1]]), **settings)
        expected.append(chat_ids[-1])
        context = make_context(tokenizer, query, history=history or [], system="Be brief.")[1]
        task_scores.append(_ScoreRecorder())
        tasks.append(DecodeTask(context, max_new_tokens, [EOD], stops + get_stop_words_ids("chatml", tokenizer),
                                LogitsProcessorList([task_scores[-1]])))
    assert {len(ids) for ids in expected} >= {1, 2, 4, 12}  # rows really end at different steps
    assert [ids[-1] for ids, r in zip(expected, requests) if r[3] is not None] == [EOD, EOD]  # stopped early

    monkeypatch.setattr(continuous, "_headroom_capacity", lambda columns: columns + 2)
    shapes, encodings, hooks = _watch_forwards(model)
    try:
        stats = {}
        finished = list(generate_greedy(model, tasks, batch_size=3, pad_token_id=EOD, stats=stats))
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(index for index, _ in finished) == list(range(len(tasks)))
    assert {index: ids for index, ids in finished} == dict(enumerate(expected))
    problems = [p for i in range(len(tasks)) for p in _score_differences(i, task_scores[i].steps, chat_scores[i].steps)]
    assert not problems, "\n".join(problems)

    steps = [rows for kind, rows, tokens in shapes if kind == "step"]
    prefills = [i for i, (kind, rows, tokens) in enumerate(shapes) if kind == "prefill"]
    assert max(rows for _, rows, _ in shapes) <= 3 and all(tokens == 1 for kind, _, tokens in shapes if kind == "step")
    assert prefills[-1] > shapes.index(next(s for s in shapes if s[0] == "step"))  # requests joined a running batch
    # A static batch of 3 requests at a time decodes until its longest row ends.
    static_steps = sum(max(len(ids) for ids in expected[i:i + 3]) - 1 for i in range(0, len(expected), 3))
    assert len(steps) < static_steps
    # Each image is encoded once: the scene for request 1 (request 2 copies its prefix, image included), the
    # portrait for request 4 (the scene still known); requests 5 and 7 copy the scene's columns from running rows.
    assert sum(encodings) == 2, encodings
    # Shared prefixes were copied, not computed (requests 1, 2, 5, 7 share the system prompt and the scene).
    assert 0 < stats["reused_tokens"] and stats["prefill_tokens"] + stats["reused_tokens"] == stats["prompt_tokens"]
    assert stats["prompt_tokens"] == sum(len(task.context_tokens) for task in tasks)


class _EndAfterPromptDependentLength(LogitsProcessor):
    """Forces <|im_end|> once a row has generated 1 + (prompt length mod 4) tokens (state kept per call)."""

    def __init__(self):
        self.prompt_width = None

    def __call__(self, input_ids, scores):
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1]
        if input_ids.shape[1] - self.prompt_width == 1 + self.prompt_width % 4:
            scores[:] = -float("inf")
            scores[:, IM_END] = 0.0
        return scores


@pytest.mark.usefixtures("in_reference_dir")
def test_continuous_batching_isolates_a_bad_image_and_runs_per_request_processors(short_context_model):
    model, tokenizer = short_context_model
    queries = ["Hi.", tokenizer.from_list_format([{"image": "images/missing.png"}, {"text": "What?"}]),
               IMAGE + "What is this?", "Tell me more " * 20, "Bye."]
    fresh = lambda: LogitsProcessorList([_EndAfterPromptDependentLength()])  # noqa: E731
    alone = {i: model.chat(tokenizer, q, do_sample=False, max_new_tokens=12, logits_processor=fresh())[0]
             for i, q in enumerate(queries) if i != 1}
    outcomes = dict(iter_batch_chat_detailed(model, tokenizer, queries, batch_size=2, do_sample=False,
                                             max_new_tokens=12, make_logits_processor=fresh))
    assert isinstance(outcomes[1], FileNotFoundError) and "images/missing.png" in str(outcomes[1])
    assert {i: outcomes[i].response for i in alone} == alone
    lengths = {i: outcomes[i].completion_tokens for i in alone}
    assert all(outcomes[i].finish_reason == "stop" and outcomes[i].generated_ids[-2:] == [IM_END, EOD]
               for i in alone)
    assert len(set(lengths.values())) > 1, lengths  # the processor's per-prompt lengths, not one shared state
    with pytest.raises(ValueError, match="greedy"):
        iter_batch_chat_detailed(model, tokenizer, queries, max_new_tokens=4)  # sampling: no continuous path


@pytest.mark.usefixtures("in_reference_dir")
def test_tasks_carrying_pixels_use_them_and_never_load_the_named_path(short_context_model):
    """A task with `images` gets its spans' features from the pixels it carries (as the server's requests do),
    even when the span names another real image file; a span it carries nothing for is an error."""
    from mmrole.qwen_vl.chat_format import ListContent
    from mmrole.qwen_vl.image_processing_qwen import preprocess_image

    model, tokenizer = short_context_model
    size = model.config.visual["image_size"]
    stops = get_stop_words_ids("chatml", tokenizer)
    carried = {"images/portrait_200x300.png": preprocess_image("images/scene_300x200.png", size)}
    decoy = ListContent(({"image": "images/portrait_200x300.png"}, {"text": "What is this?"}))
    context = make_context(tokenizer, decoy, system="Be brief.")[1]
    unknown = make_context(tokenizer, ListContent(({"image": "never-carried"}, {"text": "?"})), system="x")[1]
    tasks = [DecodeTask(context, 6, [EOD], stops, images=carried), DecodeTask(unknown, 6, [EOD], stops, images={})]
    outcomes = dict(generate_greedy(model, tasks, batch_size=2, pad_token_id=EOD))
    scene, portrait = (model.batch_chat_detailed(tokenizer, [f"Picture 1: <img>images/{name}</img>\nWhat is this?"],
                                                 systems="Be brief.", do_sample=False, max_new_tokens=6)[0]
                       for name in ("scene_300x200.png", "portrait_200x300.png"))
    assert scene.generated_ids != portrait.generated_ids, "the two images give different answers"
    assert outcomes[0] == scene.generated_ids
    assert isinstance(outcomes[1], ValueError) and "never-carried" in str(outcomes[1])
    with pytest.raises(ValueError, match="no features"):  # the forward itself: given features, it loads nothing
        model.transformer(input_ids=torch.tensor([context]), image_features={"other": carried[
            "images/portrait_200x300.png"]})


def test_rows_sample_with_their_own_generator_and_end_when_on_token_says(short_context_model):
    from mmrole.qwen_vl.generation.chat import prepare_chat

    model, tokenizer = short_context_model
    contexts = [make_context(tokenizer, text, system="Be brief.")[1]
                for text in ("Invent a word.", "Tell me a story " * 10, "Count to ten.")]
    sampled = lambda: prepare_chat(model, tokenizer, contexts[0], seed=99, do_sample=True, temperature=1.0,  # noqa: E731
                                   top_p=1.0, max_new_tokens=8).task
    alone = dict(generate_greedy(model, [sampled()], batch_size=1, pad_token_id=EOD))[0]
    seen = []
    stop_after_three = lambda token: seen.append(token) or len(seen) == 3  # noqa: E731
    greedy = [prepare_chat(model, tokenizer, contexts[1], do_sample=False, max_new_tokens=8).task,
              prepare_chat(model, tokenizer, contexts[2], do_sample=False, max_new_tokens=8,
                           on_token=stop_after_three).task]
    together = dict(generate_greedy(model, [greedy[0], sampled(), greedy[1]], batch_size=3, pad_token_id=EOD))
    assert together[1] == alone, "a seeded row samples the same beside other rows"
    other_seeds = {tuple(dict(generate_greedy(model, [prepare_chat(
        model, tokenizer, contexts[0], seed=seed, do_sample=True, temperature=1.0, top_p=1.0,
        max_new_tokens=8).task], batch_size=1, pad_token_id=EOD))[0]) for seed in (1, 2, 3)}
    assert len(other_seeds | {tuple(alone)}) > 1
    assert together[2] == seen and len(seen) == 3
    with pytest.raises(ValueError, match="repetition_penalty"):
        prepare_chat(model, tokenizer, contexts[0], do_sample=False, repetition_penalty=1.2)


def test_moving_cache_columns_keeps_them_intact_when_source_and_target_overlap():
    for target in (0, 1, 4, 7):
        buffer = torch.arange(12.0).view(1, 1, 12, 1).clone()
        continuous._move_columns(buffer, 3, 8, target)
        assert buffer[0, 0, target:target + 5, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0], target


def test_batched_sampling_runs_and_follows_the_seed(short_context_model):
    model, tokenizer = short_context_model
    queries = ["Hello there.", "Tell me something long " * 20, "Bye."]
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.batch_chat_detailed(tokenizer, queries, max_new_tokens=4))  # do_sample from the config
    assert [r.generated_ids for r in runs[0]] == [r.generated_ids for r in runs[1]]
    assert all(1 <= r.completion_tokens <= 4 for r in runs[0])


@pytest.mark.usefixtures("in_reference_dir")
def test_chat_stream_yields_the_growing_response(ref_model, tokenizer, expected):
    case = expected["chat"][2]  # stops after one token: .qual, <|im_end|>, forced <|endoftext|>
    pieces = list(ref_model.chat_stream(tokenizer, case["query"], system=case["system"], do_sample=False,
                                        max_new_tokens=REF_MAX_NEW_TOKENS))
    assert pieces == [case["response"]] * 3
    case = expected["chat"][0]
    pieces = list(ref_model.chat_stream(tokenizer, case["query"], system=case["system"], do_sample=False,
                                        max_new_tokens=5))
    assert pieces == [tokenizer.decode(case["generated_ids"][:n], skip_special_tokens=True, errors="ignore")
                      for n in range(1, 6)]


def test_closing_a_stream_early_stops_generation(ref_model, tokenizer):
    """Closing the stream after its first piece stops the decoding within a few steps. The worker thread is joined
    either way, so the decoding steps are counted: read to the end, this reply runs to max_new_tokens."""
    limit = 120
    steps = []
    hook = ref_model.transformer.register_forward_hook(lambda module, args, out: steps.append(1))
    try:
        assert list(ref_model.chat_stream(tokenizer, "Hello!", do_sample=False, max_new_tokens=limit))
        read_to_the_end = len(steps)
        steps.clear()
        stream = ref_model.chat_stream(tokenizer, "Hello!", do_sample=False, max_new_tokens=limit)
        first = next(stream)
        stream.close()
    finally:
        hook.remove()
    assert read_to_the_end == limit  # a prefill and limit - 1 cached steps: this reply never ends early
    assert isinstance(first, str) and len(steps) <= 10, f"{len(steps)} decoding steps after the stream was closed"
    assert not [t for t in threading.enumerate() if t.name == "qwen-chat-stream"]


@pytest.mark.parametrize("through", ["chat", "generate"])
def test_a_stock_transformers_streamer_receives_the_generated_text(ref_model, tokenizer, expected, through):
    case = expected["chat"][0]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    if through == "chat":
        run = lambda: ref_model.chat(tokenizer, case["query"], system=case["system"], do_sample=False,  # noqa: E731
                                     max_new_tokens=5, streamer=streamer)
    else:
        run = lambda: ref_model.generate(torch.tensor([case["context_tokens"]]), do_sample=False,  # noqa: E731
                                         max_new_tokens=5, stop_words_ids=[[IM_END], [IM_START]], streamer=streamer)
    worker = threading.Thread(target=run)
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed == tokenizer.decode(case["generated_ids"][:5], skip_special_tokens=True)


def test_chat_naming_a_missing_image_is_one_error_naming_the_path(ref_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    query = tokenizer.from_list_format([{"image": "images/missing.png"}, {"text": "What is it?"}])
    for answer in (lambda: ref_model.chat(tokenizer, query, do_sample=False, max_new_tokens=2),
                   lambda: ref_model.batch_chat(tokenizer, ["Hi", query], do_sample=False, max_new_tokens=2)):
        with pytest.raises(FileNotFoundError) as error:
            answer()
        assert str(error.value) == (
            f"image file not found: 'images/missing.png' (relative to the working directory {tmp_path})")


def test_chat_defaults_come_from_the_checkpoint_generation_config(ref_model, tokenizer, monkeypatch):
    seen = {}

    def fake_generate(input_ids, generation_config=None, stop_words_ids=None, **kwargs):
        seen.update(config=generation_config, stops=stop_words_ids, kwargs=kwargs)
        return torch.cat([input_ids, torch.tensor([[EOD]])], dim=1)

    monkeypatch.setattr(ref_model, "generate", fake_generate)
    ref_model.chat(tokenizer, "Hi")
    config = seen["config"]
    assert (config.do_sample, config.top_p, config.top_k, config.max_new_tokens) == (True, 0.3, 0, 512)
    assert seen["stops"] == [[IM_END], [IM_START]] and seen["kwargs"] == {}
    ref_model.chat(tokenizer, "Hi", do_sample=False, max_new_tokens=7, stop_words_ids=[[11, 12]])
    assert (seen["config"].do_sample, seen["config"].max_new_tokens) == (False, 7)
    assert seen["stops"] == [[11, 12], [IM_END], [IM_START]]
    assert ref_model.generation_config.max_new_tokens == 512  # the model's own config is untouched
    with pytest.raises(ValueError, match="chatml"):
        ref_model.chat(tokenizer, "Hi", generation_config=GenerationConfig(chat_format="raw"))


def test_stop_words_processor_forces_eos_only_after_a_full_stop_sequence():
    processor = StopWordsLogitsProcessor([[5, 6], [9]], eos_token_id=0)
    input_ids = torch.tensor([[1, 5, 6], [1, 2, 6], [3, 4, 9], [6, 5, 5]])
    scores = processor(input_ids, torch.zeros(4, 10))
    assert scores[:, 0].tolist() == [FORCED_EOS_SCORE, 0.0, FORCED_EOS_SCORE, 0.0]
    assert scores[:, 1:].abs().sum() == 0
    with pytest.raises(ValueError):
        StopWordsLogitsProcessor([[]], eos_token_id=0)


def _judge_like_requests(tokenizer, model):
    """Groups of prompts that are the same up to a sentence near their end, as a sample's judge prompts are, with
    endings of different lengths, so that rows of one group fall on both sides of seq_length (48) or of a step of the
    dynamic-NTK factor. (query, max_new_tokens, group name)."""
    aspects = ["Fluency.", "Is it coherent?", "Tone " * 3, "Knowledge " * 6, "Personality " * 9, "Accuracy " * 13,
               "Relevance " * 18, "Adherence " * 24]
    tail = "\nAnswer with a score."
    groups = {  # prefix, group name
        "around seq_length": "Rate the reply. " * 3,
        "two images, alpha 31 and 63": TWO_IMAGES + "Compare them. " * 60,
        "alpha 15 and 31": IMAGE + "Question: why? " * 15,
    }
    requests = []
    for name, prefix in groups.items():
        orders = ("A first. ", "B first. ") if name == "alpha 15 and 31" else ("",)  # 16 rows, like --swap
        for order in orders:
            for k, aspect in enumerate(aspects):
                requests.append((prefix + order + aspect + tail, 1 if (k, order) == (3, "") else 5, name))
    return requests


@pytest.mark.slow  # 40 chats and two batched runs: ~2 minutes on 2 busy cores
@pytest.mark.usefixtures("in_reference_dir")
def test_rows_sharing_a_prompt_prefix_each_get_their_chat(short_context_model, monkeypatch):
    """Eight rows sharing a prefix (around seq_length; two images across alpha 31/63) and sixteen (two orders x eight,
    across alpha 15/31), admitted together and as running rows end: every row's ids and every step's scores (top 5,
    logsumexp, to 1e-4) equal its one-at-a-time `chat`, although most of the prefill was copied. A row whose NTK
    factor differs from its group's computes its prefix itself; a row ends at its first token."""
    model, tokenizer = short_context_model
    requests = _judge_like_requests(tokenizer, model)
    contexts = [make_context(tokenizer, query, system="Be a judge.")[1] for query, _, _ in requests]
    alphas = {}
    for (_, _, group), ids in zip(requests, contexts):
        alphas.setdefault(group, set()).add(model.transformer.ntk_alpha_for_length(len(ids)))
    assert alphas == {"around seq_length": {1, 3}, "two images, alpha 31 and 63": {31, 63}, "alpha 15 and 31": {15, 31}}
    short = [len(ids) for (_, _, g), ids in zip(requests, contexts) if g == "around seq_length"]
    assert min(short) <= 48 < max(short)  # both sides of seq_length: log-n for some rows only
    chat_ids = _record_chat_ids(model, monkeypatch)
    stops = get_stop_words_ids("chatml", tokenizer)
    chat_scores, task_scores, tasks = [], [], []
    for (query, max_new_tokens, _), context in zip(requests, contexts):
        chat_scores.append(_ScoreRecorder())
        model.chat(tokenizer, query, system="Be a judge.", do_sample=False, max_new_tokens=max_new_tokens,
                   logits_processor=LogitsProcessorList([chat_scores[-1]]))
        task_scores.append(_ScoreRecorder())
        tasks.append(DecodeTask(context, max_new_tokens, [EOD], stops, LogitsProcessorList([task_scores[-1]])))
    assert len(chat_ids[3]) == 1  # this row ends at its first token

    for batch_size in (8, 16):  # 8: a group joins together, the next one as rows end; 16: sixteen rows at once
        for recorder in task_scores:
            recorder.steps.clear()
        stats = {}
        finished = dict(generate_greedy(model, tasks, batch_size=batch_size, pad_token_id=EOD, stats=stats))
        assert finished == dict(enumerate(chat_ids)), batch_size
        problems = [p for i in range(len(tasks))
                    for p in _score_differences(i, task_scores[i].steps, chat_scores[i].steps)]
        assert not problems, "\n".join([f"batch_size {batch_size}"] + problems)
        # Most prompt tokens were copied: each group's shared prefix is computed once per NTK factor.
        assert stats["prompt_tokens"] == sum(map(len, contexts))
        assert stats["prefill_tokens"] + stats["reused_tokens"] == stats["prompt_tokens"]
        assert stats["prefill_tokens"] < 0.35 * stats["prompt_tokens"], stats


def test_a_prefix_is_shared_only_under_the_same_ntk_factor_and_images():
    """The planner: same ids but another NTK factor (another full length) share nothing; a span naming another image
    (or carrying other pixels) cuts the shared part before it; a joiner follows another joiner only for enough ids."""
    from mmrole.qwen_vl.generation import prefill

    def prompt(ids, alpha=1, spans=(), carried=None, slot=0):
        return prefill.Joiner(ids=np.asarray(ids), alpha=alpha, spans=list(spans), carried=carried, slot=slot)

    base = list(range(100))
    assert prefill.shareable_length(prompt(base + [1]), prompt(base + [2])) == 100
    assert prefill.shareable_length(prompt(base + [1], alpha=3), prompt(base + [2], alpha=1)) == 0
    span = prefill.ImageSpan(10, 20, "a.png")
    assert prefill.shareable_length(prompt(base, spans=[span]), prompt(base, spans=[span])) == 100
    other = prefill.ImageSpan(10, 20, "b.png")
    assert prefill.shareable_length(prompt(base, spans=[span]), prompt(base, spans=[other])) == 10
    pixels = torch.zeros(3, 4, 4)
    assert prefill.shareable_length(prompt(base, spans=[span], carried={"a.png": pixels}),
                                    prompt(base, spans=[span], carried={"a.png": pixels.clone()})) == 100
    assert prefill.shareable_length(prompt(base, spans=[span], carried={"a.png": pixels}),
                                    prompt(base, spans=[span], carried={"a.png": pixels + 1})) == 10
    assert prefill.shareable_length(prompt(base, spans=[span], carried={"a.png": pixels}),
                                    prompt(base, spans=[span])) == 10
    running = prompt(base[:60] + [7] * 40, slot=5)
    joiners = [prompt(base + [1], slot=0), prompt(base + [2], slot=1), prompt(base[:20] + [9] * 81, slot=2),
               prompt(base + [3], alpha=3, slot=3)]
    prefill.plan_sharing(joiners, [running])
    assert [(j.source and j.source.slot, j.reused, j.rank) for j in joiners] == [
        (5, 60, 0), (0, 100, 1), (5, 20, 0), (None, 0, 0)]


def test_a_joiner_copying_a_prefix_beside_one_that_copies_nothing_gets_its_own_answer(short_context_model):
    """Prefill pieces of one forward: a joiner that copies a running row's prefix, beside a joiner of the same length
    that copies nothing (its first id is another). Both, and the running row, get what `generate` gives each alone."""
    model, _ = short_context_model
    rng = np.random.default_rng(5)
    shared, own, other = (rng.integers(100, 3000, size=60).tolist() for _ in range(3))
    prompts = {"running": shared, "copies 20": shared[:20] + own[20:], "copies nothing": [shared[0] + 1] + other[1:]}
    limits = {"running": 8, "copies 20": 4, "copies nothing": 4}
    alone = {}
    for name, ids in prompts.items():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=limits[name], eos_token_id=EOD,
                             pad_token_id=EOD, stop_words_ids=[], logits_processor=None)
        alone[name] = out[0, len(ids):].tolist()
    names = list(prompts)
    tasks = [DecodeTask(prompts[name], limits[name], [EOD], []) for name in names]
    batch = continuous.DecodingBatch(model, 3, EOD)
    got = {}
    with torch.inference_mode():
        batch.admit(0, 0, tasks[0])
        got.update(batch.step())
        assert not batch.admit_all([(1, 1, tasks[1]), (2, 2, tasks[2])])
        assert batch.stats["reused_tokens"] == 20 and batch.stats["prefill_forwards"] == 2  # one forward each time
        while batch.live:
            got.update(batch.step())
    assert {names[index]: ids for index, ids in got.items()} == alone
