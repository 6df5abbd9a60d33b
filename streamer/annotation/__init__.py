"""The annotation tools: labelled datasets read back (`dataset` for COCO and YOLO, `tools` for CVAT and Label
Studio exports, `samples` for the records both make), `export` and `track_export` (datasets and MOT files from
a run), `label_studio` (the ML backend that pre-annotates), `evaluate` and `finetune`.

May import: `streamer.records`, `streamer.config`, `streamer.errors`, `streamer.model`, `streamer.outputs` (the
store a run left).
"""
