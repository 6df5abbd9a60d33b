"""Events to MQTT and webhooks, /metrics and /healthz, against a real broker and real HTTP."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from streamer.config import Config
from streamer.outputs.delivery import MqttSink, WebhookSink, verify_signature
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.brokers import Mosquitto, Receiver, Subscriber
from tests.helpers import CLIP, ROOT, read_events
from tests.rtsp_server import RtspServer, require_gstreamer, wait_for
from tests.scripted import ScriptedDetector


def moving(index):
    x = 10 + 3 * index
    time.sleep(0.02)
    return [("car", (x, 200, x + 120, 260), None), ("text", (300, 40, 360, 60), "AB 42")]


def run_file(tmp_path, sinks, script=moving):
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}})
    spec = SourceSpec(str(CLIP), tmp_path / "events.jsonl", None, name="street")
    Pipeline(config, lambda: ScriptedDetector(script), sinks).run_many([spec])
    return read_events(tmp_path / "events.jsonl")


def test_mqtt_events_state_and_availability(tmp_path, event_validator):
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    try:
        sink = MqttSink(Config.model_validate({"mqtt": {"url": broker.url}}).mqtt, tmp_path / "outbox")
        assert wait_for(lambda: "online" in subscriber.payloads("availability"), 10)
        events = run_file(tmp_path, [sink])
        sink.close()
        assert wait_for(lambda: len(subscriber.payloads("street/events")) == len(events), 10)
        assert subscriber.payloads("street/events") == events
        for event in subscriber.payloads("street/events"):
            event_validator.validate(event)
        states = subscriber.payloads("street/state")
        assert states[0]["objects"] and states[-1]["objects"] == []  # everything left at the end
        assert subscriber.payloads("availability")[-1] == "offline"
    finally:
        subscriber.close()
        broker.stop()


def test_mqtt_broker_restart_mid_run_loses_nothing_and_keeps_order(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    sink = MqttSink(Config.model_validate({"mqtt": {"url": broker.url}}).mqtt, tmp_path / "outbox")
    result = {}

    def slow(index):
        time.sleep(0.15)
        return moving(index)

    thread = threading.Thread(target=lambda: result.setdefault("events", run_file(tmp_path, [sink], slow)))
    try:
        thread.start()
        assert wait_for(lambda: subscriber.payloads("street/events"), 15)
        broker.stop()  # events keep coming while it is away
        time.sleep(2.0)
        broker.start()
        thread.join(timeout=60)
        sink.close()
        events = result["events"]
        assert wait_for(lambda: len(subscriber.payloads("street/events")) >= len(events), 20)
        got = subscriber.payloads("street/events")
        # Every one, in order. QoS 1 is at least once: a message the broker took but had not acknowledged when it
        # went down comes again, the same bytes (README: de-duplicate on the payload); nothing else may repeat.
        once = [e for i, e in enumerate(got) if e not in got[:i]]
        assert once == events and len(got) - len(once) <= 2
        assert sink.outbox.overflowed == 0
    finally:
        subscriber.close()
        broker.stop()


def test_last_will_flips_availability_when_streamer_is_killed(tiny_od, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    try:
        config = tmp_path / "c.yaml"
        config.write_text(f"sampler: {{every_n_frames: 1, max_fps: null}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", str(CLIP), "--model", str(tiny_od),
                                 "--config", str(config), "--mqtt", broker.url, "--no-video"], cwd=ROOT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: "online" in subscriber.payloads("availability"), 30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            assert wait_for(lambda: subscriber.payloads("availability")[-1:] == ["offline"], 15)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        subscriber.close()
        broker.stop()


def test_webhook_retries_500s_and_timeouts_signs_and_loses_nothing(tmp_path):
    receiver = Receiver(fail=3, stall=1, stall_s=1.5)
    config = Config.model_validate({"webhooks": {"urls": [receiver.url], "secret": "k3y", "timeout_s": 0.5,
                                                 "backoff_max_s": 0.5}}).webhooks
    sink = WebhookSink(receiver.url, config, tmp_path / "outbox", 0)
    try:
        events = run_file(tmp_path, [sink])
        sink.close()
        assert wait_for(lambda: all(r["status"] for r in receiver.requests), 5)  # the stalled one finishes
    finally:
        receiver.close()
    handled = [r for r in receiver.requests if r["status"] == 200]
    assert sum(r["status"] == 500 for r in receiver.requests) == 3
    for request in receiver.requests:
        assert verify_signature("k3y", request["body"], request["headers"]["X-Streamer-Signature"])
        assert not verify_signature("wrong", request["body"], request["headers"]["X-Streamer-Signature"])
    # A stalled request was processed but timed out for the sender, so it was sent again with the same id:
    # the receiver de-duplicates by X-Streamer-Event-Id and gets every event once, in order.
    unique = {}
    for request in handled:
        unique.setdefault(request["headers"]["X-Streamer-Event-Id"], json.loads(request["body"]))
    assert list(unique.values()) == events
    assert len(handled) == len(events) + 1


def test_metrics_parse_and_move_and_healthz_flips_when_a_source_dies(tmp_path):
    require_gstreamer()
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from streamer.web.live import LiveView
    from streamer.web.server import StatusServer

    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(text, name, source):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("source") == source:
                    return sample.value
        return None

    with RtspServer() as camera:
        config = Config.model_validate({"live": {"read_timeout_s": 2.0, "backoff_initial_s": 0.2,
                                                 "backoff_max_s": 1.0}})
        view = LiveView()
        pipeline = Pipeline(config, lambda: ScriptedDetector(lambda i: []), [view])
        server = StatusServer("127.0.0.1:0", pipeline, view).start()
        thread = threading.Thread(target=pipeline.run_many,
                                  args=([SourceSpec(camera.url(), tmp_path / "e.jsonl", None, name="cam")],))
        thread.start()
        try:
            assert wait_for(lambda: get(server.address + "/healthz")[0] == 200, 20)
            first = metric(get(server.address + "/metrics")[1], "streamer_frames_total", "cam")
            time.sleep(1.0)
            text = get(server.address + "/metrics")[1]
            assert metric(text, "streamer_frames_total", "cam") > first
            assert metric(text, "streamer_keyframes_total", "cam") >= 1
            assert metric(text, "streamer_frame_to_event_latency_seconds_count", "cam") >= 1
            assert any(f.name == "streamer_worker_batch_size" for f in text_string_to_metric_families(text))
            camera.kill()
            assert wait_for(lambda: get(server.address + "/healthz")[0] == 503, 10)
            assert json.loads(get(server.address + "/healthz")[1])["down"] == ["cam"]
            camera.start()
            assert wait_for(lambda: get(server.address + "/healthz")[0] == 200, 15)
        finally:
            pipeline.stop()
            thread.join(timeout=15)
            server.close()


def test_an_event_the_receiver_refuses_is_set_aside_and_the_rest_still_go(tmp_path):
    receiver = Receiver(refuse=b'"object_appeared"')
    config = Config.model_validate({"webhooks": {"urls": [receiver.url], "backoff_max_s": 0.5}}).webhooks
    sink = WebhookSink(receiver.url, config, tmp_path / "outbox", 0)
    try:
        events = run_file(tmp_path, [sink], script=lambda i: moving(i)[:1])
        sink.close()
    finally:
        receiver.close()
    delivered = [json.loads(r["body"]) for r in receiver.requests if r["status"] == 200]
    assert delivered == [e for e in events if e["type"] != "object_appeared"] and delivered
    dead = [json.loads(line) for line in (tmp_path / "outbox" / "webhook-0.outbox.dead.jsonl").read_text().splitlines()]
    assert [d["item"]["event"] for d in dead] == [e for e in events if e["type"] == "object_appeared"]
    assert all(d["reason"] == "the receiver refused it: HTTP 400" for d in dead)


def test_a_poisoned_outbox_from_an_earlier_run_does_not_block_delivery(tmp_path):
    """An outbox written before topics were checked holds an item with a wildcard topic: it is set aside."""
    from streamer.outputs.outbox import Outbox

    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    outbox = Outbox(tmp_path / "outbox" / "mqtt.outbox")
    outbox.put({"topic": "bad/#/street/events", "payload": {"n": 1}, "retain": False})
    outbox.put({"topic": "streamer/street/events", "payload": {"n": 2}, "retain": False})
    outbox.close()
    try:
        sink = MqttSink(Config.model_validate({"mqtt": {"url": broker.url}}).mqtt, tmp_path / "outbox")
        assert wait_for(lambda: subscriber.payloads("street/events") == [{"n": 2}], 10)
        sink.close()
    finally:
        subscriber.close()
        broker.stop()
    dead = (tmp_path / "outbox" / "mqtt.outbox.dead.jsonl").read_text()
    assert "bad/#/street/events" in dead and "wildcard" in dead.lower()
