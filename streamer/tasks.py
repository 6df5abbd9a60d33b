"""The Florence-2 tasks streamer knows, and what kind of answer each gives.

The kinds decide how an answer becomes `sv.Detections`: boxes, OCR quads, polygons, or frame-level text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AnswerKind = Literal["boxes", "ocr", "polygons", "text", "open_vocabulary"]


@dataclass(frozen=True)
class Task:
    token: str
    kind: AnswerKind
    needs_prompt: bool = False


TASKS: dict[str, Task] = {
    t.token: t
    for t in (
        Task("<OD>", "boxes"),
        Task("<DENSE_REGION_CAPTION>", "boxes"),
        Task("<REGION_PROPOSAL>", "boxes"),
        Task("<CAPTION_TO_PHRASE_GROUNDING>", "boxes", needs_prompt=True),
        Task("<OPEN_VOCABULARY_DETECTION>", "open_vocabulary", needs_prompt=True),
        Task("<OCR_WITH_REGION>", "ocr"),
        Task("<REFERRING_EXPRESSION_SEGMENTATION>", "polygons", needs_prompt=True),
        Task("<REGION_TO_SEGMENTATION>", "polygons", needs_prompt=True),
        Task("<OCR>", "text"),
        Task("<CAPTION>", "text"),
        Task("<DETAILED_CAPTION>", "text"),
        Task("<MORE_DETAILED_CAPTION>", "text"),
        Task("<REGION_TO_CATEGORY>", "text", needs_prompt=True),
        Task("<REGION_TO_DESCRIPTION>", "text", needs_prompt=True),
        Task("<REGION_TO_OCR>", "text", needs_prompt=True),
    )
}


PROMPT_MAX = 200  # characters of text a task is given (a phrase to ground, a region's words): a phrase, not a page

CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")  # a frame's caption, not text read


def check_task(name: str) -> str:
    """Accept `<OD>` or `OD` (any case); return the canonical token or raise ValueError naming the known ones."""
    token = name.strip().upper()
    if not token.startswith("<"):
        token = f"<{token}>"
    if token not in TASKS:
        known = ", ".join(TASKS)
        raise ValueError(f"unknown task '{name}'; known tasks: {known}")
    return token
