import pytest

from streamer.errors import StreamerError
from streamer.reader import Reader
from streamer.sources import display_name


def test_reads_every_frame_in_order_with_times(clip):
    reader = Reader(str(clip), queue_size=4)
    info = reader.open()
    assert (info.width, info.height, info.fps, info.total_frames) == (640, 360, 25, 150)
    reader.start()
    frames = list(reader.frames())
    reader.stop()
    assert [f.index for f in frames] == list(range(150))
    assert frames[0].pts == 0.0 and frames[-1].pts == pytest.approx(149 / 25)
    assert all(b.pts > a.pts and b.wall_time >= a.wall_time for a, b in zip(frames, frames[1:]))
    assert frames[0].image.shape == (360, 640, 3)


def test_stop_ends_a_reader_blocked_on_a_full_queue(clip):
    reader = Reader(str(clip), queue_size=2)
    reader.open()
    reader.start()
    reader.stop()
    assert not reader._thread.is_alive()


@pytest.mark.parametrize("content, message", [(None, "input not found"), (b"not a video", "not a video file")])
def test_bad_input_is_one_line(tmp_path, content, message):
    path = tmp_path / "x.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StreamerError, match=message):
        Reader(str(path)).open()


def test_credentials_never_in_display_name():
    assert display_name("rtsp://admin:s3cret@127.0.0.1:8554/cam?x=1") == "rtsp://127.0.0.1:8554/cam?x=1"
    assert display_name("clips/a.mp4") == "clips/a.mp4"
