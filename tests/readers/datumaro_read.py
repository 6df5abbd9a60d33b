"""Run by the tests in Datumaro's own venv (CVAT's dataset layer): which formats it detects in each folder, and
every box it imports, as JSON on the last line of stdout. Argument: JSON {format: folder}."""

import json
import sys

import datumaro as dm

IMPORTERS = {"coco": "coco_instances", "yolo": "yolo", "mot": "mot_seq", "cvat": "cvat"}

out = {}
env = dm.Environment()
for fmt, path in json.loads(sys.argv[1]).items():
    dataset = dm.Dataset.import_from(path, IMPORTERS[fmt])
    labels = dataset.categories()[dm.AnnotationType.label]
    out[fmt] = {
        "detected": env.detect_dataset(path),
        "items": len(dataset),
        "boxes": [[str(item.id), labels[a.label].name, list(a.get_bbox()), a.attributes.get("track_id")]
                  for item in dataset for a in item.annotations if a.type == dm.AnnotationType.bbox],
    }
print(json.dumps(out))
