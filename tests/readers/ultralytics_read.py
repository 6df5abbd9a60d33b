"""Run by the tests with Ultralytics on the path: its dataset checker on a data.yaml, then its own training
dataset's labels (image, class, normalised xywh) as JSON on the last line of stdout. Argument: the data.yaml."""

import json
import sys

from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset

data = check_det_dataset(sys.argv[1], autodownload=False)
dataset = YOLODataset(img_path=data["train"], data=data, task="detect", augment=False, cache=False)
print(json.dumps({"names": data["names"], "val": data["val"],
                  "labels": [[label["im_file"], label["cls"].ravel().tolist(), label["bboxes"].tolist()]
                             for label in dataset.labels]}))
