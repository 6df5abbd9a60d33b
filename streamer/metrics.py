"""Prometheus metrics that stages observe as they happen (histograms), in one registry per process.

Counters and gauges that the stages keep anyway (frames, keyframes, drops) are read at scrape time by the HTTP
server's collector; what needs a distribution is observed here, with prometheus_client's own `Histogram`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("streamer_frame_to_event_latency_seconds",
                                 "From a keyframe's decode to its tracks and events", ["source"],
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("streamer_worker_batch_size", "Keyframes per model call",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
