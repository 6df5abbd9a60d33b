"""How good a Florence-2 is on labelled footage: mAP per class and overall, precision and recall.

The model answers each image through the same detector the pipeline uses (so `model.min_confidence` and the
per-box confidences apply as in a run); supervision's metrics score the answers against the dataset: mAP@50
and mAP@50:95 (COCO's way), and precision and recall at IoU 0.5. A label the dataset does not have counts as a
false positive. Where the dataset has text, `<OCR_WITH_REGION>` reads each image and the character error rate
(edits to turn the read text into the labelled one, over the labelled characters; a text box nobody read costs
all its characters) is reported too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import supervision as sv
from rapidfuzz.distance import Levenshtein
from supervision.metrics import MeanAveragePrecision, Precision, Recall

from streamer.annotation.samples import Dataset
from streamer.model.worker import Detector
from streamer.records import TEXT, Frame, Keyframe


@dataclass
class ClassScore:
    name: str
    boxes: int  # in the dataset
    map50: float
    map50_95: float


@dataclass
class Report:
    images: int
    boxes: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    classes: list[ClassScore] = field(default_factory=list)
    texts: int = 0  # labelled texts, when the dataset has any
    cer: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """Back from `dataclasses.asdict` (a fine-tuning checkpoint keeps the evaluation before it)."""
        return cls(**{**data, "classes": [ClassScore(**c) for c in data["classes"]]})


def answers(detector: Detector, dataset: Dataset, task: str, batch: int = 4) -> list[sv.Detections]:
    """The model's answer for `task` on every image, in batches as the worker would send them."""
    out = []
    for start in range(0, len(dataset.samples), batch):
        keyframes = [Keyframe(Frame("dataset", start + i, 0.0, 0.0, s.image), task)
                     for i, s in enumerate(dataset.samples[start : start + batch])]
        out += [result.detections for result in detector.detect(keyframes)]
    return out


def predict(detector: Detector, dataset: Dataset, task: str = "<OD>", batch: int = 4) -> list[sv.Detections]:
    """The model's boxes on every image, with `class_id` into the dataset's classes (unknown labels beyond)."""
    index = {name: i for i, name in enumerate(dataset.classes)}
    out = answers(detector, dataset, task, batch)
    for det in out:
        names = det.data.get("class_name", np.array([], dtype=object))
        det.class_id = np.array([index.setdefault(str(n), len(index)) for n in names], dtype=int)
        if det.confidence is None:
            det.confidence = np.ones(len(det), dtype=np.float32)
    return out


def character_error_rate(dataset: Dataset, reads: list[sv.Detections]) -> tuple[int, float]:
    """(labelled texts, CER): each labelled text against the read box that overlaps it most (IoU >= 0.5)."""
    edits = chars = count = 0
    for sample, read in zip(dataset.samples, reads):
        labelled = [(i, t) for i, t in enumerate(sample.texts or []) if t]
        if not labelled:
            continue
        iou = sv.box_iou_batch(sample.boxes.xyxy[[i for i, _ in labelled]], read.xyxy) if len(read) else None
        taken: set[int] = set()
        for row, (_, text) in enumerate(labelled):
            best = -1
            if iou is not None:
                order = [j for j in np.argsort(-iou[row]) if iou[row, j] >= 0.5 and j not in taken]
                best = order[0] if order else -1
            said = str(read.data[TEXT][best]) if best >= 0 else ""
            taken.add(best)
            edits += Levenshtein.distance(said, text)
            chars += len(text)
            count += 1
    return count, (edits / chars if chars else 0.0)


def score(dataset: Dataset, predictions: list[sv.Detections], reads: list[sv.Detections] | None = None) -> Report:
    targets = [s.boxes for s in dataset.samples]
    m = MeanAveragePrecision().update(predictions, targets).compute()
    precision = Precision().update(predictions, targets).compute().precision_at_50
    recall = Recall().update(predictions, targets).compute().recall_at_50
    counts = np.bincount(np.concatenate([t.class_id for t in targets if len(t)]).astype(int),
                         minlength=len(dataset.classes))
    per_class = {int(c): ap for c, ap in zip(m.matched_classes, m.ap_per_class)}
    classes = [ClassScore(name, int(counts[i]), float(per_class[i][0]) if i in per_class else 0.0,
                          float(per_class[i].mean()) if i in per_class else 0.0)
               for i, name in enumerate(dataset.classes) if counts[i]]  # a class with no box here has no score
    report = Report(len(dataset.samples), int(counts.sum()), _number(m.map50), _number(m.map50_95),
                    _number(precision), _number(recall), classes)
    if reads is not None:
        report.texts, report.cer = character_error_rate(dataset, reads)
    return report


def evaluate(detector: Detector, dataset: Dataset, batch: int = 4) -> Report:
    """Boxes (`<OD>`) on every image, and text (`<OCR_WITH_REGION>`) where the dataset has any, scored."""
    reads = answers(detector, dataset, "<OCR_WITH_REGION>", batch) if dataset.has_text else None
    return score(dataset, predict(detector, dataset, "<OD>", batch), reads)


def _number(value) -> float:
    value = float(value)
    return 0.0 if not np.isfinite(value) or value < 0 else value  # supervision says -1 where nothing matched


def render(report: Report, fmt: str, title: str = "") -> str:
    if fmt == "json":
        return json.dumps(asdict(report), indent=2)
    lines = [f"{title}{report.images} images, {report.boxes} boxes: mAP@50 {report.map50:.3f}, "
             f"mAP@50:95 {report.map50_95:.3f}, precision {report.precision:.3f}, recall {report.recall:.3f}",
             f"  {'class':<24} {'boxes':>6} {'mAP@50':>7} {'mAP@50:95':>9}"]
    lines += [f"  {c.name:<24} {c.boxes:>6} {c.map50:7.3f} {c.map50_95:9.3f}" for c in report.classes]
    if report.cer is not None:
        lines.append(f"  text: {report.texts} labelled, character error rate {report.cer:.3f}")
    return "\n".join(lines)


def side_by_side(before: Report, after: Report, held_out: bool = True) -> str:
    """The evaluation before and after fine-tuning, a line per figure and class, and on which images."""
    rows = [("mAP@50", before.map50, after.map50), ("mAP@50:95", before.map50_95, after.map50_95),
            ("precision", before.precision, after.precision), ("recall", before.recall, after.recall)]
    rows += [(f"{b.name} mAP@50", b.map50, a.map50) for b, a in zip(before.classes, after.classes)]
    if before.cer is not None and after.cer is not None:
        rows.append(("character error rate", before.cer, after.cer))
    on = (f"on {after.images} validation images ({after.boxes} boxes) held out of training" if held_out else
          f"on the {after.images} training images (none held out: finetune.val_share is 0 or there is one image)")
    return "\n".join([f"  {on}", f"  {'':<28} {'before':>7} {'after':>7}"]
                     + [f"  {name:<28} {b:7.3f} {a:7.3f}" for name, b, a in rows])
