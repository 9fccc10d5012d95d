"""Prefilling the requests that join a decoding batch (continuous.py): a prompt prefix that rows share is computed
once, and the joiners of one step are prefilled together.

A joining request brings the keys and values of its prompt without the last token (its "prefill ids"). The last
prompt token is its first input of the next decoding step, computed with the running rows, and its first token is
chosen there from that position, as `chat` chooses it from the last position of its prefill.

Shared prefixes. The judge's eight prompts of a sample (sixteen with --swap) are the same ids up to the aspect
sentence near their end; the prompts of a server's clients often share a system prompt and a profile. A joiner
whose prefill ids begin with ids whose keys and values a row of the batch already holds (a running row, or a joiner
of the same step computed in an earlier pass) copies those columns into its own slot and computes only the rest.
This is exact (the same computation, not an approximation) because the planner only shares when
- the ids agree: position p's keys and values depend on the ids (and image features) at positions 0..p alone
  (causal attention), so the common part's columns are what the joiner's own prefill would compute;
- the dynamic-NTK factors agree: the original computes ONE factor per prompt from its full length and applies it to
  every position of that prompt, so a prefix's columns serve only rows whose own full length gives the factor they
  were computed with. Each row's rest is computed with its own full length's factor, passed as `ntk_alpha`;
- log-n needs nothing: it scales the query at absolute position p by a function of p alone
  (modeling_qwen.logn_scale), and every piece is computed at its absolute positions;
- the images agree: the same names in the common ids (as the image memo, a name stands for one image while the batch
  runs) and, for tasks that carry their pixels, equal pixels under those names.
Only float rounding differs (a piece computed in another matrix shape), as in any batched generation. The copy is a
design choice: every row keeps its whole prompt in its own slot, so one attention call per layer serves all rows
(docs/qwen_vl.md gives the memory it costs).

Batched prefill. The joiners of one step that need computing go through the model together, padded on the left to
the longest piece (buckets keep padding under MAX_PADDING of a forward's tokens; a joiner that follows another
joiner of the same step waits for a later pass). Each row's piece attends to its own reused columns and to itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..image_processing_qwen import find_image_spans, preprocess_images, span_image_path

# A joiner follows another joiner of the same step (waiting for a later forward pass) only for at least this many
# shared ids: below it, the extra pass costs more than the ids it saves. Sharing with a running row costs no pass.
MIN_SHARED_IDS = 32
# Padding allowed in one prefill forward, as a share of its tokens; longer pieces go in their own forward.
MAX_PADDING = 0.25
# Tokens (padding included) per prefill forward at most: bounds the activations of a burst of joiners.
MAX_PREFILL_TOKENS = 16384


@dataclass(frozen=True)
class ImageSpan:
    """An image in a prompt: the positions of its <img> and </img> ids and the name (path) written inside."""

    start: int
    end: int
    name: str

    def overlaps(self, begin: int, end: int) -> bool:
        """Whether any of its feature positions (start+1 .. end-1) lies in [begin, end)."""
        return self.start + 1 < end and self.end - 1 > begin


def image_spans(model, ids: Sequence[int]) -> List[ImageSpan]:
    """The image spans of a prompt (a ValueError for malformed ones, as the forward would raise)."""
    visual = model.config.visual
    if visual["image_start_id"] not in ids:
        return []
    spans = find_image_spans(torch.tensor([list(ids)]), visual["image_start_id"], model.transformer.visual.n_queries)
    return [ImageSpan(start, end, span_image_path(list(ids[start + 1 : end]), visual["image_start_id"] + 2))
            for _, start, end in spans]


@dataclass(eq=False)
class CachedPrompt:
    """A prompt whose prefill ids have (or will have) keys and values in a slot: a running row's, or a joiner's.

    ids: the prefill ids (prompt without its last token); alpha: the factor of the full prompt's length;
    carried: the task's pixels by name (None: the names are paths); start: the column of position 0 (running rows:
    read from the cache when needed)."""

    ids: np.ndarray
    alpha: float
    spans: List[ImageSpan]
    carried: Optional[Mapping[str, torch.Tensor]]
    slot: int
    start: Optional[int] = None


@dataclass(eq=False)
class Joiner(CachedPrompt):
    """A request being admitted: its prompt, and where its prefill ids come from. source/reused: the prompt whose
    first `reused` columns it copies (None, 0: none); rank: the pass it is computed in (0 first)."""

    index: int = -1
    task: object = None
    source: Optional[CachedPrompt] = None
    reused: int = 0
    rank: int = 0
    features: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def computed(self) -> int:
        return len(self.ids) - self.reused


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(a[:n] != b[:n])
    return int(mismatch[0]) if mismatch.size else n


def shareable_length(joiner: CachedPrompt, source: CachedPrompt) -> int:
    """How many leading columns of `source` the joiner may copy: the common ids, if the NTK factors agree, cut
    before the first image that differs (another name, other carried pixels, or a path against pixels)."""
    if joiner.alpha != source.alpha:
        return 0
    length = common_prefix_length(joiner.ids, source.ids)
    source_spans = {span.start: span for span in source.spans}
    for span in joiner.spans:
        if span.start >= length:
            break
        # Equal ids may begin two different paths ("images/a.png", "images/b.png"): the features, not the ids, fill
        # a span, so the whole name must agree, and so must the pixels a task carries under it.
        other = source_spans.get(span.start)
        if other is None or other.name != span.name or not _same_image(span.name, joiner.carried, source.carried):
            return span.start
    return length


def _same_image(name: str, a: Optional[Mapping[str, torch.Tensor]], b: Optional[Mapping[str, torch.Tensor]]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return name in a and name in b and (a[name] is b[name] or torch.equal(a[name], b[name]))


def plan_sharing(joiners: Sequence[Joiner], running: Sequence[CachedPrompt]) -> None:
    """Choose each joiner's source: the running row or earlier joiner it shares the most ids with (a joiner only
    from MIN_SHARED_IDS on; among equals the one computed earliest, so that few passes are needed)."""
    for position, joiner in enumerate(joiners):
        joiner.source, joiner.reused, joiner.rank = None, 0, 0
        best = (0, 0)  # (shared ids, -rank of the pass the joiner would wait for)
        candidates = [(source, 0, 1) for source in running] + \
            [(other, other.rank + 1, MIN_SHARED_IDS) for other in joiners[:position]]
        for source, rank, at_least in candidates:
            shared = shareable_length(joiner, source)
            if shared >= at_least and (shared, -rank) > best:
                best = (shared, -rank)
                joiner.source, joiner.reused, joiner.rank = source, shared, rank


def prefill_buckets(joiners: Sequence[Joiner]) -> List[List[Joiner]]:
    """The joiners of one pass that compute anything, grouped into forwards: longest piece first, a forward closed
    when adding the next piece would pad more than MAX_PADDING of its tokens or exceed MAX_PREFILL_TOKENS."""
    pending = sorted((j for j in joiners if j.computed > 0), key=lambda j: -j.computed)
    buckets: List[List[Joiner]] = []
    for joiner in pending:
        if buckets:
            bucket = buckets[-1]
            width = bucket[0].computed
            padded = width * (len(bucket) + 1)
            real = sum(j.computed for j in bucket) + joiner.computed
            if padded - real <= MAX_PADDING * padded and padded <= MAX_PREFILL_TOKENS:
                bucket.append(joiner)
                continue
        buckets.append([joiner])
    return buckets


def needed_images(joiner: Joiner) -> List[ImageSpan]:
    """The spans whose features the joiner's computed part needs (images in its reused part are already in the
    copied columns)."""
    return [span for span in joiner.spans if span.overlaps(joiner.reused, len(joiner.ids))]


@dataclass(eq=False)
class _EncodedImage:
    name: str
    carried: Optional[torch.Tensor]  # the task's pixels, None for an image loaded from the path `name`
    features: Optional[torch.Tensor] = None

    def shows(self, name: str, carried: Optional[torch.Tensor]) -> bool:
        if name != self.name or (carried is None) != (self.carried is None):
            return False
        return carried is None or carried is self.carried or torch.equal(carried, self.carried)


class ImageMemo:
    """Features of the images of the latest admission, reused while later joiners show the same images (by name,
    and from the same kind of source: paths, or equal pixels carried by the task). Images no joiner of an admission
    needs are dropped, so old images are never kept beside new ones."""

    def __init__(self, model):
        self.model = model
        self.images: List[_EncodedImage] = []

    def encode(self, joiners: Sequence[Joiner]) -> Dict[int, Exception]:
        """Fill each joiner's `features` for its needed images, encoding the new ones in one vision forward.
        Returns {position in joiners: error} for the joiners whose image could not be loaded (OSError)."""
        known, new, pixels, failed = list(self.images), [], [], {}
        image_size = self.model.transformer.visual.image_size
        for position, joiner in enumerate(joiners):
            for span in needed_images(joiner):
                carried = None if joiner.carried is None else joiner.carried[span.name]
                if any(image.shows(span.name, carried) for image in known + new):
                    continue
                try:
                    pixels.append(carried if carried is not None else preprocess_images([span.name], image_size)[0])
                except OSError as error:
                    failed[position] = error
                    continue
                new.append(_EncodedImage(span.name, carried))
        if new:
            encoded = self.model.transformer.visual(torch.stack(pixels).to(self.model.device))
            for image, features in zip(new, encoded):
                image.features = features
        used: List[_EncodedImage] = []
        for position, joiner in enumerate(joiners):
            if position in failed:
                continue
            for span in needed_images(joiner):
                carried = None if joiner.carried is None else joiner.carried[span.name]
                image = next(image for image in new + known if image.shows(span.name, carried))
                joiner.features[span.name] = image.features
                used += [image] if all(image is not other for other in used) else []
        self.images = used or self.images
        return failed


def piece_embeddings(model, bucket: Sequence[Joiner], width: int, pad_token_id: int) -> torch.Tensor:
    """[n, width, C] input embeddings of the computed pieces, right-aligned (left padding): token embeddings with
    the image features written at the positions of their spans (a piece may begin or end inside a span)."""
    device = model.device
    ids = torch.full((len(bucket), width), pad_token_id, dtype=torch.long)
    for row, joiner in enumerate(bucket):
        ids[row, width - joiner.computed :] = torch.from_numpy(joiner.ids[joiner.reused :])
    embeds = model.transformer.wte(ids.to(device))
    for row, joiner in enumerate(bucket):
        offset = width - len(joiner.ids)  # column of prompt position 0 in this row (may be negative)
        for span in needed_images(joiner):
            first, last = max(span.start + 1, joiner.reused), min(span.end, len(joiner.ids))
            features = joiner.features[span.name][first - span.start - 1 : last - span.start - 1]
            embeds[row, offset + first : offset + last] = features.to(device=embeds.device, dtype=embeds.dtype)
    return embeds


class PrefillWriter:
    """The cache a prefill forward sees: each row's new keys and values go into its slot, right-aligned at the
    cache's `length` (the columns its reused prefix does not hold), and attention reads the rows' columns of the
    last `width` positions (reused prefix + piece; left of a shorter prompt: masked)."""

    def __init__(self, cache, bucket: Sequence[Joiner], width: int, tokens: int):
        self.cache = cache
        self.slots = [joiner.slot for joiner in bucket]
        self.pieces = [joiner.computed for joiner in bucket]
        self.width = width
        self.tokens = tokens
        # The forward's own keys serve attention only when no row copied a prefix: a row that did holds, left of
        # its piece, the padding's keys where its copied columns belong.
        self.only_computed = all(joiner.reused == 0 for joiner in bucket)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width - self.tokens

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """key/value: [n, H, tokens, D] -> the keys and values the rows attend to, [n, H, width, D]."""
        cache = self.cache
        cache.allocate(layer_idx, key, value)
        end = cache.length
        for row, (slot, count) in enumerate(zip(self.slots, self.pieces)):
            cache.keys[layer_idx][slot, :, end - count : end] = key[row, :, self.tokens - count :]
            cache.values[layer_idx][slot, :, end - count : end] = value[row, :, self.tokens - count :]
        if self.only_computed:
            return key, value
        return cache.columns(layer_idx, self.slots, end - self.width, end)


def prefill_forward(model, cache, bucket: Sequence[Joiner], pad_token_id: int) -> None:
    """Compute the pieces of one bucket of joiners in one forward, writing their keys and values into their slots
    (their reused columns must be in place)."""
    tokens = max(joiner.computed for joiner in bucket)
    width = max(len(joiner.ids) for joiner in bucket)
    positions = torch.zeros(len(bucket), tokens, dtype=torch.long)
    mask = torch.zeros(len(bucket), width, dtype=torch.bool)
    for row, joiner in enumerate(bucket):
        positions[row, tokens - joiner.computed :] = torch.arange(joiner.reused, len(joiner.ids))
        mask[row, width - len(joiner.ids) :] = True
    device = model.device
    model.transformer(inputs_embeds=piece_embeddings(model, bucket, tokens, pad_token_id),
                      past_key_values=PrefillWriter(cache, bucket, width, tokens),
                      attention_mask=None if bool(mask.all()) else mask.to(device),
                      position_ids=positions.to(device), ntk_alpha=[joiner.alpha for joiner in bucket], use_cache=True)
