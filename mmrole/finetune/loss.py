"""The training loss from the logits of learned positions only.

The model's own loss (the original's) takes the mean cross-entropy of logits[:, t] against labels[:, t + 1] over
every t whose label is not -100. Computing [B, T, vocab] logits for that wastes most of the work and memory: the
prompt positions of a role-play or judge sample (profiles, history, 258 image tokens, the judge prompt) are all
-100. Here the logits are taken only at the positions some row of the batch learns from (the model's
`logits_to_keep`), so the loss value is the same while the lm_head and the loss see a fraction of the positions
(a [8, 3072, 151936] float tensor is 15 GB in float32, 7.5 GB in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .preprocess import IGNORE_INDEX


def supervised_loss(model, inputs: dict) -> torch.Tensor:
    """Mean shifted cross-entropy over the learned tokens of the batch (inputs as the collator gives them).

    inputs: input_ids/attention_mask/labels [B, T] (+ pixel_values). Equal to model(**inputs).loss."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    next_labels = labels[:, 1:]  # the label that position t predicts
    positions = (next_labels != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # [K] learned in some row
    if positions.numel() == 0:  # nothing to learn: the model's loss (NaN, as the original's) keeps the graph
        return model(**inputs, labels=labels).loss
    logits = model(**inputs, logits_to_keep=positions).logits  # [B, K, V]
    targets = next_labels[:, positions.to(next_labels.device)].to(logits.device)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
