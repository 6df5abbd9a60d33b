"""Per-box confidence from Florence-2's own generation scores.

Florence-2 writes a box as text: a label's tokens followed by four `<loc_N>` tokens (eight for an OCR quad).
A box's confidence is the geometric mean of the probabilities the model gave to the tokens that make it, its
label tokens and its location tokens: `exp(mean(log p))`, in [0, 1]. Boxes of one phrase share the phrase's label
tokens (phrase grounding can give several boxes per phrase). Answers whose shapes are not fixed-size groups of
location tokens (polygons) get the geometric mean over the whole answer.

The boxes found this way are matched, in order, to the boxes transformers' parser returned, through their
location bins, so a confidence can never land on the wrong box; an unmatched parsed box gets the answer's mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def box_groups(
    token_ids: Sequence[int], logprobs: Sequence[float], loc_bins: dict[int, int], ignore: set[int], group: int
) -> list[tuple[tuple[int, ...], float]]:
    """Walk an answer's tokens; return (location bins, confidence) for each complete box, in order."""
    boxes: list[tuple[tuple[int, ...], float]] = []
    label: list[float] = []
    locs: list[tuple[int, float]] = []
    after_box = False
    for token, lp in zip(token_ids, logprobs):
        if token in ignore:
            continue
        if token in loc_bins:
            locs.append((loc_bins[token], lp))
            if len(locs) == group:
                scores = label + [s for _, s in locs]
                boxes.append((tuple(b for b, _ in locs), math.exp(sum(scores) / len(scores))))
                locs, after_box = [], True
            continue
        if after_box or locs:  # a new phrase starts (a half-written box is dropped, as the parser drops it)
            label, locs, after_box = [], [], False
        label.append(lp)
    return boxes


def answer_confidence(token_ids: Sequence[int], logprobs: Sequence[float], ignore: set[int]) -> float:
    scores = [lp for t, lp in zip(token_ids, logprobs) if t not in ignore]
    return math.exp(sum(scores) / len(scores)) if scores else 0.0


def align(parsed: Sequence[Sequence[int]], walked: list[tuple[Sequence[int], float]], fallback: float) -> list[float]:
    """Confidence for each parsed box (as pixel coordinates), matched in order to `walked` (same pixel scale)."""
    out: list[float] = []
    start = 0
    for box in parsed:
        target = [int(v) for v in box]
        for j in range(start, len(walked)):
            if [int(v) for v in walked[j][0]] == target:
                out.append(walked[j][1])
                start = j + 1
                break
        else:
            out.append(fallback)
    return out
