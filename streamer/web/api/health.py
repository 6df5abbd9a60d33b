"""Metrics and health: `/metrics` in Prometheus' text format, read from the pipeline at scrape time, and
`/healthz`; public with `http.metrics_public` (a scraper holds no session), signed-in otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamer.pipeline.local import Pipeline
from streamer.web.api.login import signed_in
from streamer.web.site import Here


async def scraper(request: Request) -> None:
    if not request.app.state.site.metrics_public:
        await signed_in(request)


router = APIRouter(tags=["metrics and health"], dependencies=[Depends(scraper)])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(site: Here) -> Response:
    """Per source: frames in, keyframes, drops, reconnects, fps, frame-to-event latency; the worker's batches,
    queue depth and time in the model."""
    return Response(generate_latest(site.pipeline.metrics.registry), media_type="text/plain; version=0.0.4; "
                                                                                "charset=utf-8")


@router.get("/healthz")
async def healthz(site: Here) -> JSONResponse:
    """200 when the model is loaded and every source is up; 503 naming the sources that are not."""
    pipeline = site.pipeline
    down = [st.source for st in (r.stats() for r in pipeline.runs) if not st.up]
    ok = bool(pipeline.model_loaded and not down and pipeline.runs)
    return JSONResponse({"status": "ok" if ok else "unavailable", "model_loaded": pipeline.model_loaded,
                         "down": down}, 200 if ok else 503)


class Counters:
    """A prometheus_client collector over counters the pipeline keeps anyway, read at scrape time (histograms are
    observed as they happen, in `pipeline.metrics`)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self):
        per_source = {
            "frames": CounterMetricFamily("streamer_frames", "Frames processed", labels=["source"]),
            "keyframes": CounterMetricFamily("streamer_keyframes", "Keyframes sent to the model", labels=["source"]),
            "still_keyframes": CounterMetricFamily("streamer_still_keyframes", "Keyframes sent while nothing moved "
                                                   "and no track was held (they wait behind others)",
                                                   labels=["source"]),
            "dropped": CounterMetricFamily("streamer_dropped_frames", "Stale live frames dropped", labels=["source"]),
            "reconnects": CounterMetricFamily("streamer_reconnects", "Reconnect attempts", labels=["source"]),
            "faults": CounterMetricFamily("streamer_source_faults", "Faults on a camera's path, each followed by a "
                                          "reconnect", labels=["source"]),
            "events": CounterMetricFamily("streamer_events", "Events emitted", labels=["source"]),
            "questions_asked": CounterMetricFamily("streamer_questions_asked", "Per-object questions asked",
                                                   labels=["source"]),
            "questions_answered": CounterMetricFamily("streamer_questions_answered", "Per-object questions answered",
                                                      labels=["source"]),
            "questions_dropped": CounterMetricFamily("streamer_questions_dropped",
                                                     "Per-object questions dropped (track ended, or failed)",
                                                     labels=["source"]),
            "segments": CounterMetricFamily("streamer_recorded_segments", "Recorded segments closed and indexed",
                                            labels=["source"]),
            "segments_deleted": CounterMetricFamily("streamer_recorded_segments_deleted",
                                                    "Recorded segments deleted by retention or the storage guard",
                                                    labels=["source"]),
        }
        fps = GaugeMetricFamily("streamer_fps", "Frames per second since the source started", labels=["source"])
        up = GaugeMetricFamily("streamer_source_up", "1 when the source delivers frames", labels=["source"])
        for run in self.pipeline.runs:
            st = run.stats()
            for key, family in per_source.items():
                family.add_metric([st.source], getattr(st, key))
            fps.add_metric([st.source], st.fps_so_far)
            up.add_metric([st.source], 1.0 if st.up else 0.0)
        yield from per_source.values()
        yield from (fps, up)
        worker = self.pipeline.worker
        if worker is not None:
            yield CounterMetricFamily("streamer_worker_batches", "Model calls", value=worker.batches)
            yield CounterMetricFamily("streamer_worker_keyframes", "Keyframes answered", value=worker.keyframes)
            yield CounterMetricFamily("streamer_worker_inference_seconds", "Time in the model", value=worker.busy_s)
            yield GaugeMetricFamily("streamer_worker_queue_depth", "Keyframes waiting", value=worker.queue_depth)
