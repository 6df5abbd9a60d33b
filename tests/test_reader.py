import time

import pytest

from streamer.errors import StreamerError
from streamer.pipeline.reader import open_reader
from streamer.sources import display_name, scrub


def test_reads_every_frame_in_order_with_times(clip):
    reader = open_reader(str(clip), queue_size=4)
    info = reader.info
    assert (info.width, info.height, info.fps, info.total_frames) == (640, 360, 25, 150)
    reader.start()
    frames = list(reader.frames())
    reader.stop()
    assert [f.index for f in frames] == list(range(150))
    assert frames[0].pts == 0.0 and frames[-1].pts == pytest.approx(149 / 25)
    assert all(b.pts > a.pts and b.wall_time >= a.wall_time for a, b in zip(frames, frames[1:]))
    assert frames[0].image.shape == (360, 640, 3)


def test_stop_ends_a_reader_blocked_on_a_full_queue(clip):
    reader = open_reader(str(clip), queue_size=2)
    reader.start()
    time.sleep(0.2)  # the queue is full: the thread waits for room
    started = time.monotonic()
    reader.stop()
    decoded = reader.frames_decoded
    time.sleep(0.2)
    assert time.monotonic() - started < 1.0 and reader.frames_decoded == decoded <= 3


@pytest.mark.parametrize("content, message", [(None, "input not found"), (b"not a video", "not a video file")])
def test_bad_input_is_one_line(tmp_path, content, message):
    path = tmp_path / "x.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StreamerError, match=message):
        open_reader(str(path))


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:s3cret@127.0.0.1:8554/cam?x=1", "rtsp://127.0.0.1:8554/cam?x=***"),
    # passwords typed without escaping, with the characters that end a standard parser's authority early
    ("rtsp://admin:p#ss@192.0.2.10:554/stream1", "rtsp://192.0.2.10:554/stream1"),
    ("rtsp://admin:pa/ss?w@rd@192.0.2.10/live", "rtsp://192.0.2.10/live"),
    ("rtsp://admin:12?34@cam.local/s", "rtsp://cam.local/s"),
    # tokens in the query (presigned links, HLS cameras) and fragments
    ("https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Signature=abc123&X-Amz-Expires=300",
     "https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Signature=***&X-Amz-Expires=***"),
    ("http://[::1]:8080/cam.m3u8?s3cr3tt0ken#key=abc", "http://[::1]:8080/cam.m3u8?***"),
    # an '@' in a query may hide more than the credentials, never less
    ("http://host/x?mail=someone@example.com", "http://example.com"),
    ("clips/a.mp4", "clips/a.mp4"),
])
def test_no_secret_of_a_url_in_its_display_name(url, shown):
    assert display_name(url) == shown


def test_error_text_that_quotes_a_url_is_scrubbed():
    url = "rtsp://admin:p#ss/w?rd@192.0.2.10:554/stream1?token=abcdef"
    text = f"cannot open {url}: bad password p#ss/w?rd, token abcdef, escaped p%23ss%2Fw%3Frd"
    assert scrub(text, [url]) == ("cannot open rtsp://192.0.2.10:554/stream1?token=***: bad password ***, "
                                  "token ***, escaped ***")


def test_a_camera_whose_stream_ends_gets_every_frame_it_sent(clip):
    """The decoder holds a few frames back; when a camera's stream ends they are flushed, not lost."""
    from streamer.records import SourceStatus

    reader = open_reader(str(clip), live=True, queue_size=1000)
    reader.start()
    frames = []
    try:
        for item in reader.frames():
            if isinstance(item, SourceStatus):
                break  # the stream ended: down, then it reconnects
            frames.append(item.index)
    finally:
        reader.stop()
    assert frames == list(range(150))


def test_an_http_live_stream_that_breaks_off_gives_every_frame_a_finite_increasing_time(tmp_path):
    """An MPEG-TS camera over HTTP whose stream breaks off: the frames its decoder is flushed of carry no time
    (PyAV: NaN). They are the last frame's time plus a frame interval, and so is the down status."""
    import math

    from streamer.records import SourceStatus
    from tests.chaos import TsCamera

    camera = TsCamera(tmp_path, loops=1, speed=8.0)
    try:
        reader = open_reader(f"http://127.0.0.1:{camera.port}/cam.ts", live=True, queue_size=1000)
        reader.start()
        times, down = [], None
        for item in reader.frames():
            if isinstance(item, SourceStatus):
                down = item
                break
            times.append(item.pts)
        reader.stop()
    finally:
        camera.close()
    assert len(times) == 150 and all(math.isfinite(t) for t in times)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert down.state == "down" and math.isfinite(down.pts) and down.pts == times[-1]


def test_a_frame_that_cannot_be_made_never_leaves_an_up_without_its_down(clip, monkeypatch):
    """A camera's picture that cannot be made (flipped bytes in its stream) on the first frame of a connection
    ends that connection before the camera is said to be up: its downs and ups stay in pairs. (The hour of the
    chaos soak found an up, no frame, no down, and another up.)"""
    import av

    from streamer.config import LiveConfig
    from streamer.pipeline.reader import Reader
    from streamer.records import SourceStatus

    real, calls = Reader._picture, []

    def damaged(self, av_frame):
        calls.append(1)
        if len(calls) in (151, 152):  # the first frame of the second connection, and of the third
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
        return real(self, av_frame)

    monkeypatch.setattr(Reader, "_picture", damaged)
    reader = open_reader(str(clip), live=True, queue_size=1000,
                         live_config=LiveConfig(backoff_initial_s=0.05, backoff_max_s=0.1))
    reader.start()
    states = []
    try:
        for item in reader.frames():
            if isinstance(item, SourceStatus):
                states.append(item.state)
                if states.count("down") == 2:
                    break
    finally:
        reader.stop()
    assert states == ["down", "up", "down"]


def test_an_outage_is_measured_on_the_monotonic_clock_whatever_the_wall_clock_does(monkeypatch):
    """NTP steps a fresh machine's wall clock (22 s once, in CI): a camera's outage, its `gap_s` and the media
    time it adds, must not step with it."""
    import time

    from streamer.pipeline import reader

    down = (time.time(), time.monotonic())
    monkeypatch.setattr(time, "time", lambda: down[0] - 3600.0)  # the wall clock set back an hour mid-outage
    assert 0.0 <= reader._down_for(down) < 1.0
    assert reader._down_for((down[0], None)) == 0.0  # down since before a restart: only a wall time, never negative
