"""The pipeline's stages, in the order a frame meets them, and one source's story through them.

`reader` decodes a source (`streamer.sources` names it) on a thread (`clock` gives camera frames their media
time); `sampler` picks keyframes and `schedule` the tasks on them; `flow`, `tracker` and `motion` follow boxes
from keyframe to keyframe and frame to frame; `events`, `zones` and `questions` turn tracks into events
(`task_tracking` holds them for one task). `source_run` tells one source's story with these: its `file_loop` or
its `camera_loop`, each a loop over the `steps` a frame goes through; `local` runs every source in one process
(`Pipeline`), `stats` is what a run reports.

May import the shared vocabulary and `streamer.model` (the keyframe model); `source_run`, its loops and steps,
and `local`, which build a run, also `streamer.outputs` and `streamer.recording`. Records flow one way: no stage
reaches back up.
"""
