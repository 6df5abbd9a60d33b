"""Home Assistant MQTT discovery against a real broker (Debian's Mosquitto), read as Home Assistant reads it."""

from __future__ import annotations

import json
import threading
import time

import pytest

from streamer.config import Config
from streamer.outputs.delivery import MqttSink
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.brokers import Mosquitto
from tests.helpers import CLIP
from tests.rtsp_server import wait_for
from tests.scripted import ScriptedDetector


class Retained:
    """What a client that subscribes now is given: the latest retained payload of every topic (bytes)."""

    def __init__(self, port: int, topics=("homeassistant/#", "streamer/#")) -> None:
        import paho.mqtt.client as mqtt

        self.latest: dict[str, bytes] = {}
        self.seen: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{time.monotonic_ns()}")
        client.on_connect = lambda c, *_: [c.subscribe(t, qos=1) for t in topics]
        client.on_message = self._message
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.client = client
        assert wait_for(client.is_connected, 10)

    def _message(self, client, userdata, message) -> None:
        with self._lock:
            self.seen.append((message.topic, message.payload))
            if message.payload:
                self.latest[message.topic] = message.payload
            else:
                self.latest.pop(message.topic, None)

    def configs(self) -> dict[str, dict]:
        with self._lock:
            return {t: json.loads(p) for t, p in self.latest.items() if t.startswith("homeassistant/")}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def car(index):
    return [("car", (10 + index, 60, 90 + index, 120), None)] if 20 <= index < 100 else []


def config(broker, **mqtt):
    return Config.model_validate({
        "sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
        "tracker": {"lost_after_s": 0.5}, "mqtt": {"url": broker.url, **mqtt},
        "events": {"snapshots": True, "zones": [{"name": "drive", "polygon": [[0, 0], [640, 0], [640, 360], [0, 360]]}]}})


@pytest.fixture()
def broker(tmp_path):
    started = Mosquitto(tmp_path / "broker").start()
    yield started
    started.stop()


@pytest.fixture()
def home_assistant(broker):
    """A subscriber as Home Assistant is one; start it with `watch()`, once, when it should connect."""
    made = []

    def watch() -> Retained:
        made.append(Retained(broker.port))
        return made[-1]

    yield watch
    for ha in made:
        ha.close()


def run(tmp_path, cfg, sources=("street",)):
    zones = {s: [z.name for z in cfg.events.zones] for s in sources}
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox", list(sources), zones)
    spec = SourceSpec(str(CLIP), tmp_path / f"{time.monotonic_ns()}.jsonl", None, name=sources[0])
    Pipeline(cfg, lambda: ScriptedDetector(car), [sink]).run_many([spec])
    sink.close()


def test_every_camera_and_label_appears_in_home_assistant_with_states(tmp_path, broker, home_assistant):
    run(tmp_path, config(broker))
    ha = home_assistant()  # Home Assistant starting now gets everything from the retained messages
    assert wait_for(lambda: len(ha.configs()) >= 12, 10)
    configs = ha.configs()
    by_id = {c["unique_id"]: (t, c) for t, c in configs.items()}
    assert set(by_id) == {"streamer_street_last_event", "streamer_street_zone_drive_count", "streamer_street_status",
                          "streamer_street_fps", "streamer_street_detection_fps", "streamer_street_events",
                          "streamer_street_car_occupancy",
                          "streamer_street_car_count", "streamer_street_car_snapshot",
                          "streamer_street_zone_drive_car_occupancy", "streamer_street_zone_drive_car_count",
                          "streamer_street_snapshot"}
    camera = by_id["streamer_street_snapshot"]
    assert camera[0] == "homeassistant/camera/streamer_street/snapshot/config"
    assert ha.latest[camera[1]["topic"]][:2] == b"\xff\xd8"  # the latest snapshot, a JPEG
    in_zone = by_id["streamer_street_zone_drive_car_occupancy"][1]
    assert in_zone["state_topic"] == "streamer/street/zone/drive/car/occupancy" and in_zone["name"] == "drive car occupancy"
    topic, events = by_id["streamer_street_events"]
    assert topic == "homeassistant/event/streamer_street/events/config"
    assert events["state_topic"] == "streamer/street/events" and "object_appeared" in events["event_types"]
    # the template Home Assistant renders each event's JSON with gives the payload its event platform wants
    from jinja2 import Template

    rendered = Template(events["value_template"]).render(value_json={"type": "object_left", "label": 'a "car"'})
    assert json.loads(rendered) == {"event_type": "object_left"}
    assert by_id["streamer_street_status"][1]["device_class"] == "connectivity"
    assert ha.latest["streamer/street/status"] == b"ON"  # its picture came (the run's end: availability offline)
    for topic, c in configs.items():
        assert topic.startswith("homeassistant/") and topic.endswith("/config")
        assert c["device"]["identifiers"] == ["streamer_street"] and c["device"]["name"] == "street"
        assert c["availability"][0]["topic"] == "streamer/availability"
    topic, occupancy = by_id["streamer_street_car_occupancy"]
    assert topic == "homeassistant/binary_sensor/streamer_street/car_occupancy/config"
    assert occupancy["device_class"] == "occupancy"
    latest = ha.latest
    # the car came and went: retained states say so
    assert latest[occupancy["state_topic"]] == b"OFF"
    assert latest[by_id["streamer_street_car_count"][1]["state_topic"]] == b"0"
    assert json.loads(latest["streamer/street/last_event"])["type"] in ("object_left", "zone_left")
    assert latest["streamer/street/zone/drive/count"] == b"0"
    assert latest["streamer/street/zone/drive/car/count"] == b"0"  # the car came into the drive and went
    assert [p for t, p in ha.seen if t == "streamer/street/zone/drive/car/occupancy"][-1] == b"OFF"
    assert latest[by_id["streamer_street_car_snapshot"][1]["image_topic"]][:2] == b"\xff\xd8"  # a JPEG
    assert latest["streamer/availability"] == b"offline"  # the run ended


def test_occupancy_goes_on_while_the_car_is_there_and_ha_coming_online_gets_everything_again(
        tmp_path, broker, home_assistant):
    import paho.mqtt.client as mqtt

    ha = home_assistant()
    cfg = config(broker)
    run(tmp_path, cfg)
    states = [p for t, p in ha.seen if t == "streamer/street/car/occupancy"]
    assert states[0] == b"ON" and states[-1] == b"OFF"
    # Home Assistant restarts while streamer runs: it says online, and every config comes again.
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox2", ["street"], {"street": ["drive"]})
    try:
        assert wait_for(sink.client.is_connected, 10)
        before = len([t for t, _ in ha.seen if t.endswith("/last_event/config")])
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-status")
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        publisher.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        assert wait_for(lambda: len([t for t, _ in ha.seen if t.endswith("/last_event/config")]) > before, 10)
        publisher.loop_stop()
    finally:
        sink.close()


def test_a_camera_or_zone_taken_out_of_the_config_leaves_home_assistant(tmp_path, broker, home_assistant):
    cfg = config(broker)
    run(tmp_path, cfg)
    # Next run: the camera is called "gate" now, and it has no zone.
    run(tmp_path, cfg.model_copy(update={"events": cfg.events.model_copy(update={"zones": []})}), sources=("gate",))
    ha = home_assistant()
    assert wait_for(lambda: any("streamer_gate" in t for t in ha.configs()), 10)
    time.sleep(0.5)
    assert {t.split("/")[2] for t in ha.configs()} == {"streamer_gate"}  # street's: removed (empty retained)
    assert not any("zone" in t for t in ha.configs())


def test_discovery_can_be_off(tmp_path, broker, home_assistant):
    run(tmp_path, config(broker, discovery=False))
    ha = home_assistant()
    time.sleep(1.0)
    assert ha.configs() == {} and "streamer/street/state" in ha.latest


ODD_LABELS = ["car/#", "person+", "自転車", "a" * 1000, "traffic light", "car"]


def odd_labels(index):
    """Every label a grounding phrase or a model may give, each on a box of its own."""
    if not 20 <= index < 60:
        return []
    return [(label, (10 + 100 * n, 60, 90 + 100 * n, 120), None) for n, label in enumerate(ODD_LABELS)]


def test_labels_with_wildcards_scripts_and_no_end_get_entities_home_assistant_takes(tmp_path, broker, home_assistant):
    import re

    cfg = config(broker)
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox", ["street"], {"street": ["drive"]})
    spec = SourceSpec(str(CLIP), tmp_path / "e.jsonl", None, name="street")
    Pipeline(cfg, lambda: ScriptedDetector(odd_labels), [sink]).run_many([spec])
    sink.close()
    ha = home_assistant()
    assert wait_for(lambda: len(ha.configs()) >= 7 + 3 * len(ODD_LABELS), 10)
    time.sleep(0.3)
    configs = ha.configs()
    # Home Assistant's discovery topic: anything else is ignored with a warning in its log
    discovery = re.compile(r"homeassistant/\w+/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config")
    assert all(discovery.fullmatch(t) for t in configs), [t for t in configs if not discovery.fullmatch(t)]
    occupancy = [c for c in configs.values() if c["unique_id"].endswith("_occupancy")
                 and not c["unique_id"].startswith("streamer_street_zone_")]
    assert len(configs) == 7 + 5 * len(ODD_LABELS)  # each label also in the zone (the whole picture) once
    assert len(occupancy) == len(ODD_LABELS)  # one each: no two labels share an entity
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    for c in configs.values():
        assert len(c["unique_id"]) <= 200 and c["unique_id"].isascii()  # entity ids end at 255
        for key in ("state_topic", "image_topic", "topic"):
            if key in c:
                levels = c[key].split("/")
                assert c[key].isascii() and not set("+#") & set(c[key]) and all(levels), c[key]
                assert levels[:2] == ["streamer", "street"] and len(levels) <= 6  # a label is one level, not three
                # its state was published (retained; the rates each 10 s, events not retained)
                assert c[key] in ha.latest or c[key].endswith(("/fps", "/detection_fps", "/events"))
    assert {c["name"] for c in occupancy} >= {"自転車 occupancy", "Car/# occupancy"}  # shown as the model said


def test_a_camera_that_goes_down_shows_as_disconnected_until_its_picture_comes_back(tmp_path, broker, home_assistant,
                                                                                   monkeypatch):
    from types import SimpleNamespace

    from streamer.records import Event, Logged

    monkeypatch.setattr("streamer.outputs.delivery.FPS_EVERY_S", 0.3)
    cfg = config(broker)
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox", ["gate"], {})
    ha = home_assistant()
    frame = SimpleNamespace(frame=SimpleNamespace(source="gate"), keyframe=False)
    status = "streamer/gate/status"
    try:
        sink.frame(frame)
        assert wait_for(lambda: ha.latest.get(status) == b"ON", 10)
        for n in range(40):  # 100 frames/s, one in 5 a keyframe the model answered: the rates Home Assistant shows
            sink.frame(SimpleNamespace(frame=frame.frame, keyframe=n % 5 == 0))
            time.sleep(0.01)
        assert wait_for(lambda: "streamer/gate/detection_fps" in ha.latest, 10)
        frames, keyframes = float(ha.latest["streamer/gate/fps"]), float(ha.latest["streamer/gate/detection_fps"])
        assert 10 < frames < 150 and 0.05 < keyframes / frames < 0.5, (frames, keyframes)
        sink.event(Logged.of(Event("source_down", "gate", 10, 0.4, 1767225600.0, extra={"reason": "timeout"})))
        assert wait_for(lambda: ha.latest.get(status) == b"OFF", 10)
        assert wait_for(lambda: ha.latest["streamer/gate/fps"] == b"0.0"  # in order, right after the status
                        and ha.latest["streamer/gate/detection_fps"] == b"0.00", 10)
        sink.frame(frame)  # the first frame after it: back
        assert wait_for(lambda: ha.latest.get(status) == b"ON", 10)
    finally:
        sink.close()
    assert [p for t, p in ha.seen if t == status] == [b"ON", b"OFF", b"ON"]


def test_home_assistant_turns_a_cameras_switches_and_sees_their_state(tmp_path, broker, home_assistant):
    """Frigate's switches: a `switch` entity per configured feature, `ON`/`OFF` on its command topic acted on while
    running, the state retained; a word that is neither, or a feature the configuration lacks, changes nothing."""
    from streamer.outputs.switches import Switches

    cfg = config(broker)  # snapshots on; recording on by default
    switches = Switches(cfg)
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox", ["gate"], {}, switches=switches)
    ha = home_assistant()
    try:
        assert wait_for(lambda: {"streamer_gate_detect", "streamer_gate_record", "streamer_gate_snapshots"}
                        <= {c["unique_id"] for c in ha.configs().values()}, 10)
        detect = ha.configs()["homeassistant/switch/streamer_gate/detect/config"]
        assert detect["command_topic"] == "streamer/gate/detect/set" and detect["payload_off"] == "OFF"
        assert wait_for(lambda: ha.latest.get(detect["state_topic"]) == b"ON", 10)
        ha.client.publish(detect["command_topic"], "OFF", qos=1)
        assert wait_for(lambda: ha.latest.get(detect["state_topic"]) == b"OFF", 10)
        assert not switches.on("gate", "detect") and switches.on("gate", "record")
        ha.client.publish("streamer/gate/record/set", "maybe", qos=1)  # neither: nothing changes
        ha.client.publish("streamer/gate/record/set", "off", qos=1)
        assert wait_for(lambda: ha.latest.get("streamer/gate/record/state") == b"OFF", 10)
        ha.client.publish(detect["command_topic"], "ON", qos=1)
        assert wait_for(lambda: switches.on("gate", "detect") and ha.latest[detect["state_topic"]] == b"ON", 10)
    finally:
        sink.close()
    assert [p for t, p in ha.seen if t == "streamer/gate/record/state"] == [b"ON", b"ON", b"OFF"]

    # Recording no longer configured: its switch leaves Home Assistant, and cannot be turned on
    no_record = cfg.model_copy(update={"record": cfg.record.model_copy(update={"enabled": False})})
    sink = MqttSink(cfg.mqtt, tmp_path / "outbox", ["gate"], {}, switches=Switches(no_record))
    try:
        assert wait_for(lambda: "homeassistant/switch/streamer_gate/record/config" not in ha.configs(), 10)
        said = lambda: [p for t, p in ha.seen if t == "streamer/gate/record/state"]  # noqa: E731
        before = len(said())
        ha.client.publish("streamer/gate/record/set", "ON", qos=1)
        assert wait_for(lambda: said()[before:] == [b"OFF"], 10)  # asked, and told it stays off
    finally:
        sink.close()
