"""Florence-2 on keyframes: `florence` loads a checkpoint and turns keyframes into detections (`confidence`
scores boxes; the task tokens are `streamer.tasks`), `openvino_backend` runs its vision tower on OpenVINO,
`worker` is the thread that owns the model and batches every source's keyframes (`KeyframeModel` is what the
pipeline asks).

May import the package's shared vocabulary (`records`, `config`, `errors`, `interrupts`, `tasks`, `metrics`);
nothing of the pipeline, the outputs, recording or the web side.
"""
