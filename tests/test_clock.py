"""The camera's media clock, as a table: what each frame's media time becomes."""

import pytest

from streamer.pipeline.clock import MediaClock

STEP = 0.04  # 25 fps
NAN, INF = float("nan"), float("inf")


def times(sessions, last=None):
    """Media times of frames given per connection as (outage seconds before it, [raw pts or None, ...])."""
    clock, out = MediaClock(STEP, last=last), []
    for gap, raws in sessions:
        clock.start_session(gap)
        out.append([round(clock.next(raw), 6) for raw in raws])
    return out


@pytest.mark.parametrize("sessions, last, expected", [
    # the stream's own clock, wherever it starts
    ([(0.0, [5.0, 5.04, 5.08])], None, [[0.0, 0.04, 0.08]]),
    # a gap in the stream's pts is a gap in media time
    ([(0.0, [1.0, 1.04, 2.0])], None, [[0.0, 0.04, 1.0]]),
    # RTSP's first frames without pts step on by one frame; the first timed one continues from there
    ([(0.0, [None, None, 7.0, 7.04])], None, [[0.0, 0.04, 0.08, 0.12]]),
    # a reconnect: the new connection's clock restarts, media time goes on after the outage
    ([(0.0, [3.0, 3.04]), (2.0, [0.5, 0.54])], None, [[0.0, 0.04], [2.08, 2.12]]),
    # a reconnect whose first frame has no pts
    ([(0.0, [3.0]), (1.0, [None, 0.1])], None, [[0.0], [1.04, 1.08]]),
    # pts going backwards (a looped or spliced stream): one step on, then the stream's clock from there
    ([(0.0, [10.0, 10.04, 0.0, 0.04, 0.08])], None, [[0.0, 0.04, 0.08, 0.12, 0.16]]),
    # a repeated pts never repeats a media time
    ([(0.0, [1.0, 1.0, 1.04])], None, [[0.0, 0.04, 0.08]]),
    # resumed after a process died at media time 9.0, 3 s ago
    ([(3.0, [0.0, 0.04])], 9.0, [[12.04, 12.08]]),
    # the frames a flushed decoder returns have no time base (PyAV: NaN): they step on from the last
    ([(0.0, [2.0, 2.04, NAN, NAN])], None, [[0.0, 0.04, 0.08, 0.12]]),
    # NaN and infinity anywhere: the first frame, between timed ones, as the outage or the resumed time
    ([(0.0, [NAN, INF, 1.0, -INF, 1.08])], None, [[0.0, 0.04, 0.08, 0.12, 0.16]]),
    ([(0.0, [1.0]), (NAN, [NAN, 0.5])], None, [[0.0], [0.04, 0.08]]),
    ([(0.0, [1.0, 1.04])], NAN, [[0.0, 0.04]]),
    # a pts that leaps hours ahead (a camera's clock reset) is a discontinuity, not hours of media time
    ([(0.0, [1.0, 1.04, 90000.0, 90000.04])], None, [[0.0, 0.04, 0.08, 0.12]]),
])
def test_media_time(sessions, last, expected):
    assert times(sessions, last) == expected


def test_a_files_pts_are_kept_however_far_apart():
    """A file's frames are where its pts say (a recording with an hour missing keeps the hour): no leap rule."""
    clock = MediaClock(STEP, max_leap_s=None)
    clock.start_session()
    assert [round(clock.next(raw), 6) for raw in (1.0, 1.04, 9000.0)] == [0.0, 0.04, 8999.0]
