"""Zones and lines: where tracks go, with supervision's `PolygonZone` and `LineZone`.

- `zone_entered` / `zone_left` (with `dwell_s`): a track's bottom centre enters or leaves a polygon; a track that
  ends inside a zone leaves it then.
- `line_crossed` (with `direction`, `in` or `out` as supervision defines them for the line's start -> end):
  a track's box crosses a line.
Both are evaluated on keyframes, on confirmed tracks, optionally only for some labels and some sources.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

from streamer.config import EventsConfig, LineConfig, ZoneConfig
from streamer.records import Event, Frame, Tracks


def to_pixels(points, width: int, height: int) -> np.ndarray:
    """Points in pixels, or relative to the frame when every coordinate is <= 1."""
    array = np.asarray(points, dtype=np.float64)
    if array.max(initial=0.0) <= 1.0:
        array = array * np.array([width, height])
    return array


def _applies(area: ZoneConfig | LineConfig, source: str) -> bool:
    return area.sources is None or source in area.sources


class ZoneWatcher:
    def __init__(self, config: EventsConfig, source: str, width: int, height: int) -> None:
        self.source = source
        self.zones = [
            (z, sv.PolygonZone(polygon=to_pixels(z.polygon, width, height).round().astype(np.int64)))
            for z in config.zones if _applies(z, source)
        ]
        self.lines = []
        for line in config.lines:
            if _applies(line, source):
                (x1, y1), (x2, y2) = to_pixels([line.start, line.end], width, height)
                self.lines.append((line, sv.LineZone(start=sv.Point(x1, y1), end=sv.Point(x2, y2),
                                                     triggering_anchors=(sv.Position.BOTTOM_CENTER,))))
        self._inside: dict[str, dict[int, float]] = {z.name: {} for z, _ in self.zones}
        self._labels: dict[int, str] = {}

    @property
    def active(self) -> bool:
        return bool(self.zones or self.lines)

    def polygons(self) -> list[tuple[str, np.ndarray]]:
        return [(z.name, zone.polygon) for z, zone in self.zones]

    def segments(self) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
        return [(c.name, (line.vector.start.x, line.vector.start.y), (line.vector.end.x, line.vector.end.y))
                for c, line in self.lines]

    def _event(self, kind: str, frame: Frame, det: sv.Detections | None, i: int | None, track_id: int, **extra) -> Event:
        bbox = tuple(float(v) for v in det.xyxy[i]) if det is not None else None
        return Event(type=kind, source=self.source, frame_index=frame.index, pts=frame.pts, wall_time=frame.wall_time,
                     camera_time=frame.camera_time, track_id=track_id, label=self._labels.get(track_id), bbox=bbox,
                     extra=extra)

    def update(self, tracks: Tracks) -> list[Event]:
        if not self.active:
            return []
        det, frame = tracks.detections, tracks.frame
        if det.tracker_id is None or len(det) == 0:
            confirmed = det[np.zeros(len(det), dtype=bool)] if len(det) else det
        else:
            confirmed = det[det.tracker_id >= 0]
        names = confirmed.data.get("class_name")
        labels = [str(n) for n in names] if names is not None else ["object"] * len(confirmed)
        ids = [int(t) for t in confirmed.tracker_id] if len(confirmed) else []
        self._labels.update(zip(ids, labels))
        events: list[Event] = []
        for config, zone in self.zones:
            wanted = np.array([config.labels is None or label in config.labels for label in labels], dtype=bool)
            inside_now = zone.trigger(confirmed) & wanted if len(confirmed) else np.zeros(0, dtype=bool)
            inside = self._inside[config.name]
            for i, track_id in enumerate(ids):
                if inside_now[i] and track_id not in inside:
                    inside[track_id] = frame.pts
                    events.append(self._event("zone_entered", frame, confirmed, i, track_id, zone=config.name))
                elif not inside_now[i] and track_id in inside:
                    dwell = round(frame.pts - inside.pop(track_id), 6)
                    events.append(self._event("zone_left", frame, confirmed, i, track_id, zone=config.name, dwell_s=dwell))
        for config, line in self.lines:
            wanted = np.array([config.labels is None or label in config.labels for label in labels], dtype=bool)
            subset = confirmed[wanted] if len(confirmed) else confirmed
            if len(subset) == 0:
                continue
            if subset.class_id is None:  # LineZone counts per class and insists on ids beside names
                subset.class_id = np.zeros(len(subset), dtype=int)
            crossed_in, crossed_out = line.trigger(subset)
            for i, track_id in enumerate(int(t) for t in subset.tracker_id):
                for crossed, direction in ((crossed_in, "in"), (crossed_out, "out")):
                    if crossed[i]:
                        events.append(self._event("line_crossed", frame, subset, i, track_id, line=config.name,
                                                  direction=direction))
        return events

    def track_ended(self, track_id: int, frame: Frame) -> list[Event]:
        """A track that ends inside a zone leaves it."""
        events = []
        for config, _ in self.zones:
            entered = self._inside[config.name].pop(track_id, None)
            if entered is not None:
                events.append(self._event("zone_left", frame, None, None, track_id, zone=config.name,
                                          dwell_s=round(frame.pts - entered, 6)))
        self._labels.pop(track_id, None)
        return events
