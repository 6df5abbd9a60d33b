import numpy as np

from streamer.config import SamplerConfig
from streamer.pipeline.sampler import Sampler
from streamer.records import Frame


def frames(n, fps=25.0, image=lambda i: np.zeros((36, 64, 3), np.uint8)):
    return [Frame("s", i, i / fps, 0.0, image(i)) for i in range(n)]


def chosen(config, items):
    sampler = Sampler(config)
    return [f.index for f in items if sampler.is_keyframe(f)]


def test_first_frame_and_every_n():
    assert chosen(SamplerConfig(every_n_frames=10, max_fps=None, scene_threshold=None), frames(35)) == [0, 10, 20, 30]


def test_fps_cap_limits_every_n():
    # every 5 frames at 25 fps would be 5 keyframes/s; the cap allows one each 0.5 s (12.5 frames).
    got = chosen(SamplerConfig(every_n_frames=5, max_fps=2.0, scene_threshold=None), frames(50))
    assert got == [0, 13, 26, 39]


def test_scene_change_forces_a_keyframe_between_every_n():
    def image(i):
        return np.full((36, 64, 3), 200 if i >= 7 else 20, np.uint8)

    config = SamplerConfig(every_n_frames=100, max_fps=None, scene_threshold=0.2)
    assert chosen(config, frames(30, image=image)) == [0, 7]


def test_small_changes_do_not_count_as_scene_change():
    def image(i):
        return np.full((36, 64, 3), 100 + i % 3, np.uint8)

    config = SamplerConfig(every_n_frames=None, max_fps=None, scene_threshold=0.1)
    assert chosen(config, frames(40, image=image)) == [0]


def test_expected_rate_follows_sampling_not_video():
    sampler = Sampler(SamplerConfig(every_n_frames=10, max_fps=1.0))
    assert sampler.expected_rate(25.0) == 1.0
    assert Sampler(SamplerConfig(every_n_frames=10, max_fps=None)).expected_rate(30.0) == 3.0
