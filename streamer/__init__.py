"""streamer: Florence-2 on camera streams and recorded video, tracked, annotated and logged as events."""

__version__ = "0.1.0"
