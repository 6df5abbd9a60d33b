"""Track export: the tracks of every frame, as the tools that correct video annotations open them.

- `mot`: CVAT's MOT 1.1 layout, one sequence per source: `<source>/gt/gt.txt`
  (`frame,id,x,y,w,h,1,class,1`, frames and ids counted from 1: id = track id + 1) and `<source>/gt/labels.txt`
  (class `n` is its line `n`); beside them the same tracks as a tracker's results, as MOTChallenge's scorers
  (TrackEval, `trackers.eval`) take them: `results/<source>.txt`, `frame,id,x,y,w,h,conf,-1,-1,-1` (no class
  column: a scorer reading MOT17's ground-truth layout would drop every class but 1, pedestrians).
- `cvat`: CVAT for video 1.1 XML, one file per video: a `<track>` per track id, `keyframe="1"` on frames the
  model saw (the boxes between are the tracker's), a box `outside="1"` where the track ends or breaks off.
- `label-studio`: `tasks.json`, one video task per video with a `videorectangle` prediction per track (keyframes
  where the model saw it, `enabled: false` where it ends), and `label_config.xml` for the project.

A video is a file source's own file or a camera's recorded segment, as the run's store indexes them, each with the
tracks of its frames; it is linked (copied across file systems) into `videos/` so the annotations travel with it.
Only confirmed tracks are exported: a box that never became a track is not an object to correct.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr, escape

import av

from streamer.errors import StreamerError, cannot_write
from streamer.outputs.runfolder import find_store, resolve
from streamer.outputs.sinks import tracks_beside, tracks_rows
from streamer.sources import safe_name

TRACK_FORMATS = ("mot", "cvat", "label-studio")
LABEL_STUDIO_FILES = "/data/local-files/?d="  # Label Studio's local file serving, under its document root


@dataclass
class Box:
    frame: int  # in its video, from 0
    xyxy: tuple[float, float, float, float]
    detected: bool  # the model saw it on this frame (else the tracker carried it)
    confidence: float


@dataclass
class Track:
    track_id: int
    label: str
    boxes: list[Box] = field(default_factory=list)

    def runs(self) -> list[list[Box]]:
        """Its boxes in stretches of consecutive frames (a track unseen for a while breaks into two)."""
        out: list[list[Box]] = []
        for box in self.boxes:
            if out and box.frame == out[-1][-1].frame + 1:
                out[-1].append(box)
            else:
                out.append([box])
        return out


@dataclass
class Video:
    """One video and the tracks on its frames."""

    source: str
    path: Path
    frames: int
    fps: float
    width: int
    height: int
    tracks: list[Track]
    name: str = ""  # its file name in the export


def export_tracks(run: Path, fmt: str, out: Path, media_url: str | None = None) -> tuple[int, int]:
    """Write `fmt` to `out`; (sources or videos, boxes). `media_url`: what the Label Studio tasks' video URLs
    begin with (`export` makes it from the export's final name)."""
    if fmt == "mot":
        return export_mot(run, out)
    videos = videos_of(run)
    out.mkdir(parents=True, exist_ok=True)
    try:
        _link_videos(videos, out / "videos")
        if fmt == "cvat":
            for video in videos:
                write_text(out / f"{Path(video.name).stem}.xml", cvat_xml(video))
        else:
            tasks = [label_studio_task(video, (media_url or "") + video.name) for video in videos]
            write_text(out / "tasks.json", json.dumps(tasks, indent=1))
            labels = sorted({t.label for v in videos for t in v.tracks})
            write_text(out / "label_config.xml", label_studio_config(labels, videos[0].fps))
    except OSError as exc:
        raise cannot_write("export", out, exc) from None
    return len(videos), sum(len(t.boxes) for v in videos for t in v.tracks)


def videos_of(run: Path) -> list[Video]:
    """Every video the run's store indexes whose tracks file is there, with its tracks."""
    from streamer.outputs.store import footage

    store = find_store(run)
    videos = []
    for segment in footage(store):
        path = resolve(store.parent, segment.path)
        if segment.original:  # the run's own tracks file, found beside the store when the run folder moved
            tracks = Path(segment.tracks or "tracks.jsonl")
            tracks = tracks if tracks.is_file() else store.parent / tracks.name
        else:
            tracks = tracks_beside(path)
        if not path.is_file() or not tracks.is_file():
            continue
        videos.append(_video(segment, path, tracks))
    if not videos:
        raise StreamerError(f"{store} indexes no video with its tracks: run with record.enabled (the default) and "
                            "output.write_tracks (the default) to export tracks on video")
    return videos


def _video(segment, path: Path, tracks_file: Path) -> Video:
    first = segment.first_frame or 0
    frames = (segment.last_frame - first + 1) if segment.last_frame is not None else 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 25)
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise StreamerError(f"cannot read the video {path}: {exc}") from None
    by_id: dict[int, Track] = {}
    for _, row in tracks_rows(tracks_file):
        x1, y1, x2, y2 = row["bbox"]
        if row["source"] != segment.source or row["track_id"] < 0 or x2 <= x1 or y2 <= y1:
            continue
        frame = row["frame_index"] - first
        if not 0 <= frame < max(frames, frame + 1):
            continue
        track = by_id.setdefault(row["track_id"], Track(row["track_id"], one_line(row["label"])))
        track.boxes.append(Box(frame, tuple(row["bbox"]), row.get("kind") == "detected", row.get("confidence", 1.0)))
    return Video(segment.source, path, max(frames, 1 + max((b.frame for t in by_id.values() for b in t.boxes),
                                                           default=0)),
                 fps, width, height, sorted(by_id.values(), key=lambda t: t.track_id))


def _link_videos(videos: list[Video], folder: Path) -> None:
    """Each video under a name of its own in `folder`: a hard link where the file system allows, else a copy."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for video in videos:
        name = _unique(f"{safe_name(video.source)}-{safe_name(video.path.stem)}", taken) + video.path.suffix
        video.name = name
        try:
            os.link(video.path, folder / name)
        except OSError:
            shutil.copyfile(video.path, folder / name)


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`... where two sources or videos would share one (two `clip.mp4` of two
    folders)."""
    found, n = name, 1
    while found in taken:
        n += 1
        found = f"{name}-{n}"
    taken.add(found)
    return found


def cvat_xml(video: Video) -> str:
    """CVAT for video 1.1: what CVAT imports into a task made from the same video, tracks ready to correct."""
    labels = sorted({t.label for t in video.tracks})
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
             "    <task>", f"      <name>{escape(video.name)}</name>", f"      <size>{video.frames}</size>",
             "      <mode>interpolation</mode>", "      <overlap>0</overlap>",
             "      <start_frame>0</start_frame>", f"      <stop_frame>{video.frames - 1}</stop_frame>",
             "      <labels>"]
    lines += [f"        <label><name>{escape(label)}</name><type>rectangle</type><attributes/></label>"
              for label in labels]
    lines += ["      </labels>", "      <original_size>", f"        <width>{video.width}</width>",
              f"        <height>{video.height}</height>", "      </original_size>",
              f"      <source>{escape('videos/' + video.name)}</source>", "    </task>", "  </meta>"]
    for track in video.tracks:
        lines.append(f'  <track id="{track.track_id}" label={quoteattr(track.label)} source="auto">')
        for run in track.runs():
            for i, box in enumerate(run):
                lines.append(_cvat_box(box.frame, box.xyxy, keyframe=box.detected or i == 0))
            end = run[-1]
            if end.frame + 1 < video.frames:
                lines.append(_cvat_box(end.frame + 1, end.xyxy, keyframe=True, outside=True))
        lines.append("  </track>")
    lines.append("</annotations>")
    return "\n".join(lines) + "\n"


def _cvat_box(frame: int, xyxy, keyframe: bool, outside: bool = False) -> str:
    x1, y1, x2, y2 = xyxy
    return (f'    <box frame="{frame}" keyframe="{int(keyframe)}" outside="{int(outside)}" occluded="0" '
            f'xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}" z_order="0"></box>')


def label_studio_task(video: Video, url: str) -> dict:
    """A Label Studio video task with one `videorectangle` per track: the frames the model saw and the ends of
    each stretch (Label Studio draws the frames between), `enabled: false` where a stretch ends."""
    results = []
    for track in video.tracks:
        sequence = []
        for run in track.runs():
            kept = [b for i, b in enumerate(run) if b.detected or i in (0, len(run) - 1)]
            sequence += [_ls_point(video, b, enabled=b is not run[-1] or len(run) == 1) for b in kept]
            if len(run) == 1 and run[0].frame + 1 < video.frames:
                sequence.append(_ls_point(video, Box(run[0].frame + 1, run[0].xyxy, False, 0.0), enabled=False))
        results.append({"id": f"track-{track.track_id}", "from_name": "box", "to_name": "video",
                        "type": "videorectangle", "origin": "prediction",
                        "value": {"framesCount": video.frames, "duration": video.frames / video.fps,
                                  "labels": [track.label], "sequence": sequence}})
    scores = [b.confidence for t in video.tracks for b in t.boxes if b.detected]
    return {"data": {"video": url, "source": video.source},
            "predictions": [{"model_version": "streamer", "score": sum(scores) / len(scores) if scores else 0.0,
                             "result": results}]}


def _ls_point(video: Video, box: Box, enabled: bool) -> dict:
    x1, y1, x2, y2 = box.xyxy
    return {"frame": box.frame + 1, "enabled": enabled, "rotation": 0, "time": box.frame / video.fps,
            "x": 100 * x1 / video.width, "y": 100 * y1 / video.height,
            "width": 100 * (x2 - x1) / video.width, "height": 100 * (y2 - y1) / video.height}


def label_studio_config(labels: list[str], fps: float) -> str:
    """The labelling interface the tasks' predictions are written for."""
    label_lines = "".join(f"    <Label value={quoteattr(label)}/>\n" for label in labels)
    return (f'<View>\n  <Labels name="videoLabels" toName="video" allowEmpty="true">\n{label_lines}  </Labels>\n'
            f'  <Video name="video" value="$video" framerate="{fps:g}"/>\n'
            '  <VideoRectangle name="box" toName="video"/>\n</View>\n')


def tracks_files(run: Path) -> list[Path]:
    if run.is_file():
        return [run]
    # a run's tracks file, or a recorded camera's, beside each of its segments
    found = sorted(run.glob("*tracks.jsonl")) + sorted(run.glob("recordings/*/*/*.tracks.jsonl.gz")) if run.is_dir() else []
    if not found:
        raise StreamerError(f"{run} holds no tracks file (tracks.jsonl): runs write one unless "
                            "output.write_tracks is false")
    return found


def export_mot(run: Path, out: Path) -> tuple[int, int]:
    """One MOT 1.1 sequence per source of the run's tracks files; confirmed tracks only."""
    rows: dict[str, list[tuple[int, int, tuple, str, float]]] = defaultdict(list)
    for path in tracks_files(run):
        for number, r in tracks_rows(path):
            try:
                x1, y1, x2, y2 = r["bbox"]
                if r["track_id"] >= 0 and x2 > x1 and y2 > y1:
                    sure = r.get("confidence")
                    rows[r["source"]].append((int(r["frame_index"]), int(r["track_id"]), tuple(map(float, r["bbox"])),
                                              one_line(r["label"]), 1.0 if sure is None else float(sure)))
            except (ValueError, KeyError, TypeError):
                raise StreamerError(f"{path}:{number} is not a line of a tracks file") from None
    taken: set[str] = {"results"}  # the folder of the results files
    for source, boxes in rows.items():
        labels = sorted({box[3] for box in boxes})
        number = {label: i + 1 for i, label in enumerate(labels)}
        boxes.sort()
        lines = [f"{frame + 1},{track + 1},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{number[label]},1\n"
                 for frame, track, (x1, y1, x2, y2), label, _ in boxes]
        results = [f"{frame + 1},{track + 1},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{sure:.4f},-1,-1,-1\n"
                   for frame, track, (x1, y1, x2, y2), _, sure in boxes]
        name = _unique(safe_name(source), taken)
        write_text(out / name / "gt" / "gt.txt", "".join(lines))
        write_text(out / name / "gt" / "labels.txt", "".join(f"{label}\n" for label in labels))
        write_text(out / "results" / f"{name}.txt", "".join(results))
    return len(rows), sum(len(boxes) for boxes in rows.values())


def one_line(label: str) -> str:
    """A label as every export writes it: its whitespace (a newline from a prompt or the model) one space each,
    since a one-label-a-line file (YOLO's names, MOT's labels.txt) cannot hold a line break, and every format
    must give the same label back."""
    return " ".join(str(label).split()) or "object"


def write_text(path: Path, text: str) -> None:
    """A file of the export; a failed write is one line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise cannot_write("export", path, exc) from None
