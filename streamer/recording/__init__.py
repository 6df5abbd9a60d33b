"""Recording a camera and using what was recorded: `recorder` writes contiguous indexed segments, `retention`
deletes the oldest within its own tree, `clip` cuts a moment or an event out of the segments, `find` searches
the footage for a phrase with the model.

May import: `streamer.records`, `streamer.config`, `streamer.errors`, `streamer.outputs` (the store, the sinks'
video writer, annotate), `streamer.model` (`find`).
"""
