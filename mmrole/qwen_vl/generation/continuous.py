"""Generation with continuous batching: a row leaves the decoding batch when it ends, and the next waiting
request is prefilled and takes its place ("refill finished rows").

Why: a static batch decodes until its longest row ends, and a decoding step of a small or memory-bound model
costs nearly the same for 1 or 16 rows (the vocabulary projection is read once per step either way). So the
number of steps is the cost. Here it is about (tokens generated) / batch_size plus a short tail.

Every request gets exactly what a one-at-a-time `chat` gives it (greedy):
- its prompt is prefilled as `chat` prefills it, with its own rotary positions 0..P-1, log-n, and ONE dynamic-NTK
  factor from its full length P; but the prompt's last token is its first decoding input (computed in the next
  step with the running rows, and its first token chosen from that position), and a prefix whose keys and values
  a row of the batch already holds is copied instead of computed (prefill.py says when that is exact: same ids,
  same NTK factor, same images). The joiners of one step are prefilled in shared forwards (prefill.py);
- in the shared decoding batch each row feeds its own position and keeps its own prefill NTK factor (kept per
  row in `SlotKVCache.alphas` and passed to every decoding forward as `ntk_alpha`) and attends only to its own
  keys (masked keys add exactly zero);
- tokens are chosen as transformers' greedy `generate` chooses them: float32 scores, the request's own logits
  processors, then the stop-word rule (eos forced after a stop word), argmax; a row ends on an eos token or after
  its max_new_tokens.
Only float rounding of batched products can differ, as in any batched generation.

Key/value storage (`SlotKVCache`): one preallocated buffer per layer, [rows, heads, capacity, head_dim]. All rows
append their new key at the same column at every step (one forward serves them all); row r's keys occupy columns
[start_r, length), everything left of start_r is masked. A joining row's prefill ids are written right-aligned at
`length` into its free slot (a shared prefix is copied there: every row holds its whole prompt, so one attention
call per layer serves all rows). So no step copies the cache (DynamicCache concatenates it whole at every step);
the live columns are moved left only when the buffer is full, which happens once per ~capacity/5 steps. At most
`batch_size` rows are ever held; when no request waits and half the rows are empty, the buffers shrink.

Images: each image is encoded once per admission and reused while the next joiners show it (a sample's judge
prompts); a joiner whose image lies in a copied prefix needs no encoding at all. `same_image_runs` orders requests
in runs that show the same images, longest prompt first (the rows of a run share their prefix, and rows decoding
together have similar lengths, so little attention is spent on masked columns). A task either lets the model load
the images named in its prompt's spans (the original's way: the scripts), or carries the pixels of its images by
the names its spans hold (`DecodeTask.images`, the server's way): then nothing is loaded from a path written in
the ids, and a span naming an image the task did not carry is an error.

Per row, beyond what `chat` does (for a server, `DecodingBatch` used directly with requests that come and go):
- sampling: a task with a `sampler` (a torch.Generator) draws its tokens from the softmax of its processed
  scores with that generator, its logits processors being the sampling warpers (see generation.py). A row's
  draws depend only on its own scores and generator, so a seeded request samples the same tokens alone or in
  any batch (up to float rounding of batched products, as for greedy rows);
- `on_token`: called with every chosen token; returning True ends the row at once (stop strings, streaming,
  a client that went away).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessorList

from ..image_processing_qwen import find_image_spans, span_image_path
from .prefill import CachedPrompt, ImageMemo, Joiner, image_spans, plan_sharing, prefill_buckets, prefill_forward

# The score the original gives eos right after a stop word (also the stop-word processor's, in generation.py).
FORCED_EOS_SCORE = float(2**15)
# Columns kept free beyond what the rows need when the buffers are (re)allocated: a fifth of it, at least 64.
MIN_HEADROOM = 64


@dataclass
class DecodeTask:
    """One request. context_tokens: the prompt ids (make_context). The row ends after an eos token or after
    max_new_tokens tokens; after a stop-word sequence the next token is forced to eos (score 2**15).
    logits_processor: this request's own processors (fresh, they may keep state), applied to its ids alone
    before the stop-word rule, as `generate` applies a `chat` call's logits_processor.
    images: None = the model loads the images named in the prompt's spans; else {name: CLIP-normalised pixels
    [3, S, S]} for every name written in them, and nothing is loaded from a path.
    sampler: None = greedy (argmax); a torch.Generator on the model's device = sample with it.
    on_token: called with each chosen token (the final eos too); True ends the row after that token."""

    context_tokens: Sequence[int]
    max_new_tokens: int
    eos_token_ids: Sequence[int]
    stop_words_ids: Sequence[Sequence[int]] = ()
    logits_processor: Optional[LogitsProcessorList] = None
    images: Optional[Mapping[str, torch.Tensor]] = None
    sampler: Optional[torch.Generator] = None
    on_token: Optional[Callable[[int], bool]] = None


def ends_with_stop_word(ids: Sequence[int], stop_words_ids: Sequence[Sequence[int]]) -> bool:
    return any(0 < len(seq) <= len(ids) and list(ids[-len(seq):]) == list(seq) for seq in stop_words_ids)


def same_image_runs(image_keys: Sequence[Hashable], lengths: Optional[Sequence[int]] = None) -> List[List[int]]:
    """Indexes in runs of consecutive equal keys (requests that show the same images), in the given order or,
    with the prompt lengths, longest run first (a stable sort: equal lengths keep their order)."""
    runs: List[List[int]] = []
    for index, key in enumerate(image_keys):
        if runs and image_keys[runs[-1][0]] == key:
            runs[-1].append(index)
        else:
            runs.append([index])
    if lengths is not None:
        runs.sort(key=lambda run: -max(lengths[i] for i in run))
    return runs


def _headroom_capacity(columns: int) -> int:
    return columns + max(MIN_HEADROOM, columns // 5)


def _move_columns(buffer: torch.Tensor, start: int, end: int, target: int) -> None:
    """Move buffer[:, :, start:end] so it begins at column `target`, in pieces no longer than the shift, so that
    a piece never overlaps the place it is copied to."""
    shift = target - start
    width = end - start
    if shift == 0 or width <= 0:
        return
    piece = abs(shift)
    offsets = range(0, width, piece)
    for offset in (offsets if shift < 0 else reversed(offsets)):
        size = min(piece, width - offset)
        source = start + offset
        buffer[:, :, source + shift : source + shift + size] = buffer[:, :, source : source + size]


class SlotKVCache:
    """Keys and values of the rows of a decoding batch whose rows come and go (see the module doc).

    Implements what the Qwen forward asks of a transformers Cache: get_seq_length() and update(). `alphas`
    holds each row's dynamic-NTK factor from its prefill (passed to decoding forwards as `ntk_alpha`). Slots
    without a row have start None.
    """

    def __init__(self, num_layers: int, slots: int):
        self.num_layers = num_layers
        self.keys: List[Optional[torch.Tensor]] = [None] * num_layers
        self.values: List[Optional[torch.Tensor]] = [None] * num_layers
        self.capacity = 0
        self.length = 0  # columns in use; the next step writes column `length`
        self.starts: List[Optional[int]] = [None] * slots
        self.alphas: List[float] = [1.0] * slots
        self._columns = torch.arange(0)

    @property
    def slots(self) -> int:
        return len(self.starts)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """key/value: [slots, H, 1, D], every row's newest; returns all columns up to and including it."""
        self.allocate(layer_idx, key, value)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, self.length] = key[:, :, 0]
        values[:, :, self.length] = value[:, :, 0]
        return keys[:, :, : self.length + 1], values[:, :, : self.length + 1]

    def advance(self) -> None:
        """After a decoding step: its column now belongs to every row."""
        self.length += 1

    def attention_mask(self, device: torch.device) -> torch.Tensor:
        """[slots, length + 1] bool: each row sees its own columns and the one the next step writes."""
        if self._columns.numel() < self.capacity:
            self._columns = torch.arange(self.capacity)
        no_row = self.length + 1  # an empty slot sees nothing (the forward then lets it attend causally)
        starts = torch.tensor([no_row if start is None else start for start in self.starts])
        return (self._columns[: self.length + 1][None, :] >= starts[:, None]).to(device)

    def _window_start(self) -> int:
        return min((start for start in self.starts if start is not None), default=self.length)

    def make_room_for_step(self) -> None:
        """Column `length` must exist: when the buffers are full, move the live columns to the left (and grow
        the buffers when that frees too little)."""
        if self.length < self.capacity:
            return
        window = self.length - self._window_start()
        needed = _headroom_capacity(window)
        self._relayout(window, self.capacity if self.capacity >= needed else needed)

    def make_room_for_prompt(self, prompt_length: int) -> None:
        """A prompt of this length must fit left of column `length`: shift the rows right when it is longer
        than the columns in use."""
        if prompt_length > self.length:
            self._relayout(prompt_length, max(self.capacity, _headroom_capacity(prompt_length)))

    def add_slots(self, count: int) -> None:
        """`count` more empty slots after the existing ones (the buffers are reallocated)."""
        for store in (self.keys, self.values):
            for layer, buffer in enumerate(store):
                if buffer is not None:
                    grown = buffer.new_zeros(buffer.shape[0] + count, *buffer.shape[1:])
                    grown[: buffer.shape[0]] = buffer
                    store[layer] = grown
        self.starts += [None] * count
        self.alphas += [1.0] * count

    def keep_slots(self, slots: Sequence[int]) -> None:
        """Keep only these slots (in this order), in buffers sized for what they hold."""
        window = self.length - min((self.starts[s] for s in slots if self.starts[s] is not None), default=self.length)
        self._relayout(window, _headroom_capacity(window), slots=list(slots))

    def _relayout(self, new_length: int, capacity: int, slots: Optional[List[int]] = None) -> None:
        """Move the live columns [window start, length) so that they end at new_length; reallocate the buffers
        when the capacity or the slots change (zero-filled: masked columns must hold finite numbers, since a
        masked key's weight is 0 and 0 * NaN would not be)."""
        window_start = self._window_start()
        shift = new_length - self.length
        if window_start + shift < 0 or new_length + 1 > capacity:
            raise AssertionError(f"bad cache layout: window {window_start}..{self.length} -> end {new_length}, "
                                 f"capacity {capacity}")
        for store in (self.keys, self.values):
            for layer, buffer in enumerate(store):
                if buffer is None:
                    continue
                if slots is None and capacity == self.capacity:
                    _move_columns(buffer, window_start, self.length, window_start + shift)
                    continue
                live = buffer[:, :, window_start : self.length] if slots is None else \
                    buffer[slots, :, window_start : self.length]
                fresh = buffer.new_zeros(live.shape[0], live.shape[1], capacity, live.shape[3])
                fresh[:, :, window_start + shift : new_length] = live
                store[layer] = fresh
        if slots is not None:
            self.starts = [self.starts[s] for s in slots]
            self.alphas = [self.alphas[s] for s in slots]
        self.starts = [None if start is None else start + shift for start in self.starts]
        self.length = new_length
        self.capacity = capacity

    def allocate(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Create the layer's buffers on first use, like the keys and values the model computes ([*, H, *, D])."""
        for store, like in ((self.keys, key), (self.values, value)):
            if store[layer] is None:
                store[layer] = like.new_zeros(self.slots, like.shape[1], self.capacity, like.shape[3])

    def columns(self, layer: int, slots: Sequence[int], start: int, end: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of these slots, columns [start, end): [len(slots), H, end - start, D] (a view when the
        slots are consecutive, else a copy)."""
        keys, values = self.keys[layer], self.values[layer]
        if list(slots) == list(range(slots[0], slots[0] + len(slots))):
            rows = slice(slots[0], slots[0] + len(slots))
            return keys[rows, :, start:end], values[rows, :, start:end]
        index = torch.tensor(list(slots), device=keys.device)
        return keys[:, :, start:end].index_select(0, index), values[:, :, start:end].index_select(0, index)

    def copy_columns(self, source: int, source_start: int, target: int, target_start: int, count: int) -> None:
        """Copy `count` columns of every layer from one slot to another (a shared prompt prefix)."""
        for store in (self.keys, self.values):
            for buffer in store:
                if buffer is not None:
                    buffer[target, :, target_start : target_start + count] = \
                        buffer[source, :, source_start : source_start + count]


class _Row:
    """A request in the decoding batch: its prompt (and where its cached prefill ids are), its generated ids."""

    def __init__(self, index: int, task: DecodeTask, cached: CachedPrompt):
        self.index = index
        self.task = task
        self.cached = cached
        self.ids = list(task.context_tokens)
        self.prompt_length = len(self.ids)
        self.ids_tensor: Optional[torch.Tensor] = None  # only for logits processors: [1, P + max_new_tokens]
        if task.logits_processor:
            self.ids_tensor = torch.empty(1, self.prompt_length + task.max_new_tokens, dtype=torch.long)
            self.ids_tensor[0, : self.prompt_length] = torch.tensor(self.ids)

    @property
    def generated(self) -> List[int]:
        return self.ids[self.prompt_length :]

    def process(self, scores: torch.Tensor) -> None:
        """scores: [1, V] float32 of this row, processed in place as `generate` processes a chat's scores."""
        if self.ids_tensor is not None:
            ids = self.ids_tensor[:, : len(self.ids)].to(scores.device)
            processed = scores
            for processor in self.task.logits_processor:  # as LogitsProcessorList does without keyword args
                processed = processor(ids, processed)
            if processed is not scores:
                scores.copy_(processed)
        if ends_with_stop_word(self.ids, self.task.stop_words_ids):
            scores[0, list(self.task.eos_token_ids)] = FORCED_EOS_SCORE

    def choose(self, scores: torch.Tensor) -> int:
        """The next token from this row's processed scores [V]: argmax, or a draw with the row's sampler."""
        if self.task.sampler is None:
            return int(scores.argmax())
        return int(torch.multinomial(scores.softmax(dim=-1), 1, generator=self.task.sampler))

    def add(self, token: int) -> bool:
        """Append the chosen token; True when the row has ended (eos, max_new_tokens, or its on_token says so)."""
        if self.ids_tensor is not None:
            self.ids_tensor[0, len(self.ids)] = token
        self.ids.append(token)
        ended = token in self.task.eos_token_ids or len(self.ids) - self.prompt_length >= self.task.max_new_tokens
        stopped = self.task.on_token is not None and self.task.on_token(token)
        return ended or bool(stopped)


def vocabulary_scores(lm_head: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """[N, V] float32 scores of N final hidden states [N, C]: the head called as the model's forward calls it (for
    one row exactly what `chat` computes; for several, the same up to float rounding, like any change of batch size).

    One call, not a hand-sliced projection: slices of 4,096 vocabulary rows (37 matrix products per step) were 2x
    faster on 2 idle cores (10 instead of 20 ms for 4-8 rows of the 151,936 x 128 head), but measured side by side
    on the same 2 cores shared with other jobs (load average ~13) they took 2.0-4.8 s against 0.2-0.3 s for 3-16
    rows: every product waits for the busy cores again, and the vocabulary projection became 74 % of the decoding
    time (cProfile of bench/full_eval.py)."""
    return lm_head(hidden_states[:, None])[:, -1].to(copy=True, dtype=torch.float32)


def prompt_image_paths(model, ids: Sequence[int]) -> Tuple[str, ...]:
    """The distinct image paths (names) written in a prompt's <img> spans, in order of first appearance (errors
    for malformed spans name them, as the forward would)."""
    visual = model.config.visual
    if visual["image_start_id"] not in ids:
        return ()
    spans = find_image_spans(torch.tensor([list(ids)]), visual["image_start_id"], model.transformer.visual.n_queries)
    paths = [span_image_path(list(ids[start + 1 : end]), visual["image_start_id"] + 2) for _, start, end in spans]
    return tuple(dict.fromkeys(paths))


def image_run_key(model, ids: Sequence[int]) -> Optional[Tuple[str, ...]]:
    """What groups prompts into same-image runs: their image paths, or None for a malformed span (ordering never
    fails; that prompt's prefill reports the error)."""
    try:
        return prompt_image_paths(model, ids)
    except ValueError:
        return None


class DecodingBatch:
    """The rows decoding together, in `slots` places: `admit_all` prefills tasks into free slots (together, shared
    prefixes once), `step` chooses every row's next token and frees the slots of rows that ended. `generate_greedy`
    drives it over a fixed list of tasks; a server drives it with requests as they come (mmrole.serve.engine).

    `stats`: prompt_tokens (of the admitted prompts), prefill_tokens (prompt tokens computed: prefill pieces plus
    each prompt's last token, computed in its first step), reused_tokens (copied from a shared prefix), padding_tokens
    (computed for padding), prefill_forwards, generated_tokens (tokens chosen)."""

    def __init__(self, model, slots: int, pad_token_id: int):
        self.model = model
        self.device = model.device
        self.pad_token_id = pad_token_id
        self.cache = SlotKVCache(model.config.num_hidden_layers, slots)
        self.rows: List[Optional[_Row]] = [None] * slots
        self.images = ImageMemo(model)
        self.stats = {"prompt_tokens": 0, "prefill_tokens": 0, "reused_tokens": 0, "padding_tokens": 0,
                      "prefill_forwards": 0, "generated_tokens": 0}

    @property
    def live(self) -> int:
        return sum(row is not None for row in self.rows)

    def free_slot(self) -> Optional[int]:
        return next((slot for slot, row in enumerate(self.rows) if row is None), None)

    def free_slots(self) -> List[int]:
        return [slot for slot, row in enumerate(self.rows) if row is None]

    def add_slots(self, count: int) -> None:
        """Room for `count` more rows (a server whose batch shrank while few requests came)."""
        self.cache.add_slots(count)
        self.rows += [None] * count

    def tasks(self) -> List[DecodeTask]:
        """The tasks of the rows in the batch."""
        return [row.task for row in self.rows if row is not None]

    def admit(self, slot: int, index: int, task: DecodeTask) -> None:
        """Admit one task (see admit_all); its OSError or ValueError is raised and the slot stays free."""
        for _, error in self.admit_all([(slot, index, task)]):
            raise error

    def admit_all(self, assignments: Sequence[Tuple[int, int, DecodeTask]]) -> List[Tuple[int, Exception]]:
        """Prefill tasks into free slots ((slot, task index, task) each); their first tokens are chosen at the next
        step. Returns (task index, error) for the tasks that could not be prefilled (an unreadable image, a malformed
        span, an image the task does not carry: OSError/ValueError); their slots stay free, the others are admitted."""
        failed: List[Tuple[int, Exception]] = []
        joiners: List[Joiner] = []
        for slot, index, task in assignments:
            try:
                joiners.append(self._joiner(slot, index, task))
            except (OSError, ValueError) as error:
                failed.append((index, error))
        running = [row.cached for row in self.rows if row is not None]
        while joiners:
            plan_sharing(joiners, running)
            unreadable = self.images.encode(joiners)
            if not unreadable:
                break
            failed += [(joiners[position].index, error) for position, error in unreadable.items()]
            joiners = [joiner for position, joiner in enumerate(joiners) if position not in unreadable]
        if joiners:
            self._prefill(joiners)
        return failed

    def _joiner(self, slot: int, index: int, task: DecodeTask) -> Joiner:
        """A task as a joiner in a slot (a ValueError for malformed spans or images the task does not carry)."""
        if self.rows[slot] is not None:
            raise AssertionError(f"slot {slot} is not free")
        ids = list(task.context_tokens)
        spans = image_spans(self.model, ids)
        if task.images is not None:
            missing = [span.name for span in spans if span.name not in task.images]
            if missing:
                raise ValueError(f"the prompt shows images its task does not carry: {missing[:3]}")
        return Joiner(ids=np.asarray(ids[:-1], dtype=np.int64), alpha=self.model.transformer.ntk_alpha_for_length(
                          len(ids)), spans=spans, carried=task.images, slot=slot, index=index, task=task)

    def _prefill(self, joiners: Sequence[Joiner]) -> None:
        """Write the joiners' prefill ids into their slots, right-aligned at the cache's length: copied columns of
        their sources, then their pieces computed, pass by pass (a joiner after the joiner it copies from)."""
        self.cache.make_room_for_prompt(max(len(joiner.ids) for joiner in joiners))
        end = self.cache.length
        for joiner in joiners:
            joiner.start = end - len(joiner.ids)
        for rank in range(max(joiner.rank for joiner in joiners) + 1):
            this_pass = [joiner for joiner in joiners if joiner.rank == rank]
            for joiner in this_pass:
                source = joiner.source
                if source is not None:  # a running row (start: see the cache) or a joiner of an earlier pass
                    source_start = self.cache.starts[source.slot] if source.start is None else source.start
                    self.cache.copy_columns(source.slot, source_start, joiner.slot, joiner.start, joiner.reused)
            for bucket in prefill_buckets(this_pass):
                prefill_forward(self.model, self.cache, bucket, self.pad_token_id)
                width = max(joiner.computed for joiner in bucket)
                self.stats["prefill_forwards"] += 1
                self.stats["padding_tokens"] += width * len(bucket) - sum(joiner.computed for joiner in bucket)
        for joiner in joiners:
            self.cache.starts[joiner.slot] = joiner.start
            self.cache.alphas[joiner.slot] = joiner.alpha
            cached = CachedPrompt(joiner.ids, joiner.alpha, joiner.spans, joiner.carried, joiner.slot)  # start: cache's
            self.rows[joiner.slot] = _Row(joiner.index, joiner.task, cached)
            self.stats["prompt_tokens"] += len(joiner.ids) + 1
            self.stats["prefill_tokens"] += joiner.computed + 1
            self.stats["reused_tokens"] += joiner.reused

    def step(self) -> List[Tuple[int, List[int]]]:
        """Choose the next token of every row: one forward of every row's last id (a joined row's last prompt token,
        else its last generated token). Returns (task index, generated ids) of the rows that ended."""
        live = [slot for slot, row in enumerate(self.rows) if row is not None]
        last_hidden = self._forward()
        scores = vocabulary_scores(self.model.lm_head, last_hidden[live])
        for position, slot in enumerate(live):
            self.rows[slot].process(scores[position : position + 1])
        if any(self.rows[slot].task.sampler is not None for slot in live):
            tokens = [self.rows[slot].choose(scores[position]) for position, slot in enumerate(live)]
        else:
            tokens = scores.argmax(dim=-1).tolist()
        self.stats["generated_tokens"] += len(live)
        ended = []
        for slot, token in zip(live, tokens):
            row = self.rows[slot]
            if row.add(token):
                ended.append((row.index, row.generated))
                self.rows[slot] = None
                self.cache.starts[slot] = None
        return ended

    def _forward(self) -> torch.Tensor:
        """One decoding forward of all slots (empty ones feed a pad whose output is not used); returns the final
        hidden states [slots, C]."""
        self.cache.make_room_for_step()
        last = [[row.ids[-1] if row is not None else self.pad_token_id] for row in self.rows]
        positions = [[len(row.ids) - 1 if row is not None else 0] for row in self.rows]
        output = self.model.transformer(input_ids=torch.tensor(last, device=self.device), past_key_values=self.cache,
                                        attention_mask=self.cache.attention_mask(self.device),
                                        position_ids=torch.tensor(positions, device=self.device), use_cache=True,
                                        ntk_alpha=self.cache.alphas)
        self.cache.advance()
        return output.last_hidden_state[:, -1]

    def shrink(self) -> None:
        """Drop the empty slots (when nothing waits to fill them and at least half are empty)."""
        keep = [slot for slot, row in enumerate(self.rows) if row is not None]
        if keep and len(keep) <= len(self.rows) // 2:
            self.cache.keep_slots(keep)
            self.rows = [self.rows[slot] for slot in keep]
            for slot, row in enumerate(self.rows):
                row.cached.slot = slot


def generate_greedy(
    model, tasks: Sequence[DecodeTask], batch_size: int, pad_token_id: int = 0, stats: Optional[Dict] = None
) -> Iterator[Tuple[int, Union[List[int], Exception]]]:
    """Generation for many prompts with continuous batching, at most batch_size rows at a time (greedy unless
    a task has a sampler).

    Tasks are admitted in the given order (put requests that show the same images, or share a prompt prefix, next to
    each other); the tasks that fill free rows at one step are prefilled together. Yields (task index, generated ids
    up to and including the eos that ended it) as tasks end. A task whose prompt cannot be prefilled (an unreadable
    image, a malformed image span: OSError/ValueError) yields that exception instead, and the others go on.
    `stats` (a dict) receives the batch's counters (DecodingBatch.stats) plus decoding_steps. Gradients are never
    recorded; the model's mode is left alone."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for task in tasks:
        if task.max_new_tokens < 1 or not task.eos_token_ids:
            raise ValueError(f"a task needs max_new_tokens >= 1 and eos_token_ids, got {task.max_new_tokens}, "
                             f"{task.eos_token_ids}")
    waiting = list(range(len(tasks)))[::-1]  # popped from the end
    batch = DecodingBatch(model, min(batch_size, max(len(tasks), 1)), pad_token_id)
    steps = 0
    while waiting or batch.live:
        joining = [(slot, waiting.pop()) for slot in batch.free_slots()[: len(waiting)]]
        if joining:
            with torch.inference_mode():
                failed = batch.admit_all([(slot, index, tasks[index]) for slot, index in joining])
            yield from failed
        if not batch.live:
            continue
        with torch.inference_mode():
            ended_rows = batch.step()
            steps += 1
            if not waiting:
                batch.shrink()
        if stats is not None:
            stats.update(batch.stats, decoding_steps=steps)
        yield from ended_rows
