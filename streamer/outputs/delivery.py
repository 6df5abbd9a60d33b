"""Events out to other systems: MQTT (the convention Frigate and Home Assistant use) and webhooks.

Both are event sinks of the pipeline: `event()` only appends to a durable outbox (never blocks the video), and a
thread of the sink's own delivers in order, retrying with backoff while the other side is away. On close, a sink
tries for a few seconds to flush; whatever is left stays on disk for the next run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from streamer.backoff import Backoff
from streamer.config import Config, MqttConfig, WebhookConfig
from streamer.outputs.discovery import Discovery, camera_topic, level
from streamer.outputs.outbox import Outbox
from streamer.outputs.protocol import Output
from streamer.outputs.switches import SWITCHES, Switches
from streamer.records import Logged
from streamer.sources import safe_name

log = logging.getLogger("streamer.outputs.delivery")
_FLUSH_S = 5.0
_RETRY_LATER = {408, 425, 429}  # client errors that mean "not now", not "never"


class Undeliverable(Exception):
    """An item the other side will never take (a topic the broker refuses, a body the receiver rejects): it is
    set aside, so the items behind it are not blocked forever. `sent` items before it went out."""

    def __init__(self, sent: int, reason: str) -> None:
        super().__init__(reason)
        self.sent, self.reason = sent, reason


class _OutboxSink(Output):
    """Delivers an outbox in order on its own thread; `deliver` returns how many of the batch went out (the rest
    is retried with backoff), or raises `Undeliverable` for an item that never can: it goes to a dead-letter file
    beside the outbox (`<outbox>.dead.jsonl`) with the reason, and is logged."""

    batch = 16

    def __init__(self, outbox: Outbox, backoff_max_s: float, name: str) -> None:
        self.outbox = outbox
        self.backoff_max_s = backoff_max_s
        self._stop = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def deliver(self, items: list[dict]) -> int:
        raise NotImplementedError

    def _loop(self) -> None:
        backoff = Backoff(0.2, self.backoff_max_s)
        while not self._stop.is_set():
            items = self.outbox.peek(self.batch, timeout=0.2)
            if not items:
                if self._closing:
                    return
                continue
            try:
                sent = self.deliver([payload for _, payload in items])
            except Undeliverable as exc:
                self.outbox.ack([row_id for row_id, _ in items[: exc.sent]])
                if not self._dead_letter(*items[exc.sent], exc.reason) and self._stop.wait(backoff.next_wait()):
                    return
                continue
            if sent:
                self.outbox.ack([row_id for row_id, _ in items[:sent]])
                backoff.reset()
            if sent < len(items) and self._stop.wait(backoff.next_wait()):
                return

    def _dead_letter(self, row_id: int, payload: dict, reason: str) -> bool:
        """False when the dead-letter file cannot be written (a full disk): the item stays in the outbox."""
        path = self.outbox.path.with_name(self.outbox.path.name + ".dead.jsonl")
        item = {key: json.loads(value) if key in ("event", "payload") and isinstance(value, str) else value
                for key, value in payload.items()}  # the event as an object, as a person reads the file
        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"reason": reason, "item": item}, ensure_ascii=False) + "\n")
        except OSError as exc:
            log.warning("%s: cannot set an undeliverable event aside in %s (%s); it stays in the outbox",
                        self.outbox.path.name, path, exc.strerror or exc)
            return False
        self.outbox.ack([row_id])
        log.warning("%s: an event that can never be delivered was set aside in %s: %s", self.outbox.path.name,
                    path, reason)
        return True

    def close(self) -> None:
        """Flush for a few seconds, then stop; undelivered events stay in the outbox file."""
        self._closing = True
        self.outbox.wake()
        self._thread.join(timeout=_FLUSH_S)
        self._stop.set()
        self._thread.join(timeout=2)
        left = len(self.outbox)
        if left:
            log.warning("%d events still waiting in %s; they go out on the next run", left, self.outbox.path)


FPS_EVERY_S = 10.0  # how often a camera's frame rate is published


class MqttSink(_OutboxSink):
    """Events as JSON on `<prefix>/<source>/events`, each camera's objects as retained state, and (with
    `mqtt.discovery`) Home Assistant's discovery configs and the states of their entities (`discovery`).
    `sources` and `zones`: the cameras this process runs and the zones of each, for their entities (and to
    remove those of cameras and zones no longer run, when `remove_stale`). `switches`: each camera's detection,
    recording and snapshots, turned by `ON`/`OFF` on `<prefix>/<source>/<switch>/set` (as Frigate's topics), their
    state retained on `<prefix>/<source>/<switch>/state`."""

    def __init__(self, config: MqttConfig, outbox_dir: Path, sources: list[str] = (),
                 zones: dict[str, list[str]] | None = None, remove_stale: bool = True,
                 switches: Switches | None = None) -> None:
        import paho.mqtt.client as mqtt

        parts = urlsplit(config.url)
        self.prefix = config.topic_prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
        self.sources = list(sources)
        self.switches = switches
        self.discovery = (Discovery(config.discovery_prefix, self.prefix, self.sources, zones or {},
                                    switches.names if switches is not None else ())
                          if config.discovery else None)
        self._remove_stale = remove_stale
        super().__init__(Outbox(Path(outbox_dir) / "mqtt.outbox", config.queue_max), 10.0, "mqtt")
        # Set before the network thread starts: its first callback (`_connected`) uses it
        self.client = client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                           client_id=config.client_id or f"streamer-{uuid.uuid4().hex[:8]}")
        if parts.username:
            client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            client.tls_set()
        client.will_set(self.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._connected
        client.on_message = self._message
        self._objects: dict[str, dict[int, str]] = {}
        self._in_zone: dict[tuple[str, str], dict[int, str]] = {}
        self._states: dict[str, tuple[str, bool]] = {}  # retained states published, for Home Assistant's restart
        self._rate: dict[str, list] = {}  # source -> [frames, keyframes counted, since (monotonic)]: its rates
        for source in self.sources:
            self._announce(source)
        if switches is not None:
            switches.watch(self._switched)
        client.connect_async(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883), config.keepalive_s)
        client.loop_start()
        self.start()

    def _connected(self, client, *_) -> None:
        client.publish(self.availability, "online", qos=1, retain=True)
        for source in list(self.sources):
            self._listen(source)
        if self.discovery is not None:
            client.subscribe(f"{self.discovery.prefix}/status", qos=1)
            if self._remove_stale:
                client.subscribe(f"{self.discovery.prefix}/+/+/+/config", qos=1)

    def _message(self, client, userdata, message) -> None:
        """A switch turned. Home Assistant back online: everything again. A retained config of a camera or zone
        no longer run: removed. (paho's thread; the outbox and the switches are safe to use from it.)"""
        discovery = self.discovery
        if message.topic.startswith(self.prefix + "/") and message.topic.endswith("/set"):
            self._command(message.topic, message.payload)
        elif discovery is None:
            return
        elif message.topic == f"{discovery.prefix}/status":
            if message.payload == b"online":
                self._put_all(discovery.everything())
                for topic, (payload, binary) in list(self._states.items()):
                    self.outbox.put({"topic": topic, "payload": payload, "retain": True, "b64": binary})
        elif message.retain and message.payload and discovery.stale(message.topic):
            self.outbox.put({"topic": message.topic, "payload": "", "retain": True})

    def _command(self, topic: str, payload: bytes) -> None:
        """`ON`/`OFF` on a camera's switch; anything else (another word, a camera or switch this process does not
        have) is logged and changes nothing; the state is said again, so whoever asked sees where it stands."""
        parts = topic[len(self.prefix) + 1:].split("/")
        source = next((s for s in self.sources if len(parts) == 3 and safe_name(s) == parts[0]), None)
        if source is None or parts[1] not in SWITCHES:
            log.warning("MQTT: %s: no such camera switch here", topic)
            return
        word = payload.decode("utf-8", "replace").strip().upper()
        if word not in ("ON", "OFF"):
            log.warning("MQTT: %s: %r is neither ON nor OFF", topic, payload[:40])
            self._switched(source, parts[1], self.switches.on(source, parts[1]))
        elif not self.switches.set(source, parts[1], word == "ON"):
            log.warning("MQTT: %s: %s is off in the configuration, so it cannot be switched on", topic, parts[1])

    def _switched(self, source: str, name: str, on: bool) -> None:
        self._state(camera_topic(self.prefix, source, name, "state"), "ON" if on else "OFF")

    def _announce(self, source: str) -> None:
        """A camera's entities (with discovery) and its switches' states."""
        if self.discovery is not None:
            self._put_all(self.discovery.camera(source))
            for zone in self.discovery.zones.get(source, []):
                self._state(self.discovery.state_topic(source, "zone", level(zone), "count"), "0")
        if self.switches is not None:
            for name in self.switches.names:
                self._switched(source, name, self.switches.on(source, name))

    def _listen(self, source: str) -> None:
        """A camera's switch commands; its own cameras' only: a Ray actor's client hears its camera's."""
        if self.switches is not None:
            self.client.subscribe(camera_topic(self.prefix, source, "+", "set"), qos=1)

    def frame(self, shown) -> None:
        """Every camera's every frame: its status on at its first frame (and the first after a `source_down`), its
        frame rate and detection rate (keyframes the model answered) every `FPS_EVERY_S`. A dictionary look-up a
        frame otherwise."""
        if self.discovery is None:
            return
        source, now = shown.frame.source, time.monotonic()
        counted = self._rate.get(source)
        if counted is None:  # first frame, or first since it went down
            self._state(self.discovery.state_topic(source, "status"), "ON")
            self._rate[source] = [0, 0, now]
            return
        counted[0] += 1
        counted[1] += bool(shown.keyframe)
        if now - counted[2] >= FPS_EVERY_S:
            seconds = now - counted[2]
            self._state(self.discovery.state_topic(source, "fps"), f"{counted[0] / seconds:.1f}")
            self._state(self.discovery.state_topic(source, "detection_fps"), f"{counted[1] / seconds:.2f}")
            counted[0], counted[1], counted[2] = 0, 0, now

    def _put_all(self, items) -> None:
        for topic, payload, retain in items:
            self.outbox.put({"topic": topic, "payload": payload, "retain": retain})

    def _state(self, topic: str, payload: str, binary: bool = False) -> None:
        """A retained state, kept to send again when Home Assistant restarts; `binary`: base64 of bytes."""
        self._states[topic] = (payload, binary)
        self.outbox.put({"topic": topic, "payload": payload, "retain": True, "b64": binary})

    def event(self, logged: Logged) -> None:
        event = logged.event
        if event.source not in self.sources:  # a camera the process was not told of: it gets its entities now
            self._new_source(event.source)
        source = safe_name(event.source)
        self.outbox.put({"topic": camera_topic(self.prefix, event.source, "events"), "payload": logged.line,
                         "retain": False})
        if self.discovery is not None:
            self._entities(logged)
        objects = self._objects.setdefault(source, {})
        if event.type == "object_appeared":
            objects[event.track_id] = event.label
        elif event.type == "object_left":
            objects.pop(event.track_id, None)
        else:
            return
        state = {"source": event.source, "objects": [{"track_id": t, "label": label} for t, label in objects.items()],
                 "wall_time": logged.data["wall_time"]}
        self.outbox.put({"topic": camera_topic(self.prefix, event.source, "state"),
                         "payload": json.dumps(state, ensure_ascii=False), "retain": True})
        if self.discovery is not None and event.label:
            count = sum(1 for label in objects.values() if label == event.label)
            self._state(self.discovery.state_topic(event.source, level(event.label), "count"), str(count))
            self._state(self.discovery.state_topic(event.source, level(event.label), "occupancy"),
                        "ON" if count else "OFF")

    def _new_source(self, source: str) -> None:
        self.sources.append(source)
        if self.discovery is not None:
            self.discovery.sources.append(source)
        self._announce(source)
        if self.client.is_connected():  # else it is listened to once connected
            self._listen(source)

    def _entities(self, logged: Logged) -> None:
        """Home Assistant's side of one event: a label's entities when it is new, the last event, zone counts,
        the snapshot."""
        event, discovery = logged.event, self.discovery
        if event.label and event.track_id is not None:
            self._put_all(discovery.label(event.source, event.label))
        self._state(discovery.state_topic(event.source, "last_event"), logged.line)
        if event.type == "source_down":
            self._rate.pop(event.source, None)  # its next frame says it is back
            self._state(discovery.state_topic(event.source, "status"), "OFF")
            self._state(discovery.state_topic(event.source, "fps"), "0.0")
            self._state(discovery.state_topic(event.source, "detection_fps"), "0.00")
        zone = event.extra.get("zone")
        if zone and event.type in ("zone_entered", "zone_left"):
            inside = self._in_zone.setdefault((event.source, zone), {})  # track id -> label
            if event.type == "zone_entered":
                inside[event.track_id] = event.label
            else:
                inside.pop(event.track_id, None)
            self._state(discovery.state_topic(event.source, "zone", level(zone), "count"), str(len(inside)))
            if event.label:
                self._put_all(discovery.zone_label(event.source, zone, event.label))
                count = sum(1 for label in inside.values() if label == event.label)
                where = ("zone", level(zone), level(event.label))
                self._state(discovery.state_topic(event.source, *where, "count"), str(count))
                self._state(discovery.state_topic(event.source, *where, "occupancy"), "ON" if count else "OFF")
        if logged.snapshot is not None and event.label:
            try:
                jpeg = logged.snapshot.read_bytes()
            except OSError:
                return
            picture = base64.b64encode(jpeg).decode()
            self._state(discovery.state_topic(event.source, level(event.label), "snapshot"), picture, binary=True)
            self._state(discovery.state_topic(event.source, "snapshot"), picture, binary=True)  # the camera entity

    def deliver(self, items: list[dict]) -> int:
        if not self.client.is_connected():
            return 0
        for n, item in enumerate(items):
            try:
                payload = base64.b64decode(item["payload"]) if item.get("b64") else _text(item["payload"])
                info = self.client.publish(item["topic"], payload, qos=1, retain=item["retain"])
            except ValueError as exc:  # paho's word for a topic no broker takes (wildcards, empty, too long)
                raise Undeliverable(n, f"topic {item['topic']!r}: {exc}") from None
            try:
                info.wait_for_publish(timeout=5)
            except (RuntimeError, ValueError):
                return n
            if not info.is_published():
                return n
        return len(items)

    def close(self) -> None:
        super().close()
        try:
            self.client.publish(self.availability, "offline", qos=1, retain=True).wait_for_publish(timeout=2)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()


class WebhookSink(_OutboxSink):
    """POSTs each event to one URL. Headers: X-Streamer-Event-Id (stable across retries, for de-duplication)
    and, with a secret, X-Streamer-Signature: sha256=HMAC-SHA256(secret, body)."""

    def __init__(self, url: str, config: WebhookConfig, outbox_dir: Path, index: int) -> None:
        self.url = url
        self.config = config
        super().__init__(Outbox(Path(outbox_dir) / f"webhook-{index}.outbox", config.queue_max), config.backoff_max_s,
                         f"webhook-{index}")
        self.start()

    def event(self, logged: Logged) -> None:
        self.outbox.put({"id": uuid.uuid4().hex, "event": logged.line})

    def deliver(self, items: list[dict]) -> int:
        for n, item in enumerate(items):
            body = _text(item["event"]).encode()
            headers = {"Content-Type": "application/json", "X-Streamer-Event-Id": item["id"]}
            if self.config.secret:
                digest = hmac.new(self.config.secret.encode(), body, hashlib.sha256).hexdigest()
                headers["X-Streamer-Signature"] = f"sha256={digest}"
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    if not 200 <= response.status < 300:
                        return n
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500 and exc.code not in _RETRY_LATER:
                    raise Undeliverable(n, f"the receiver refused it: HTTP {exc.code}") from None
                return n
            except (urllib.error.URLError, OSError, TimeoutError):
                return n
        return len(items)

    def close(self) -> None:
        super().close()
        self.outbox.close()


def event_sinks(config: Config, outbox_dir: Path, client_tag: str | None = None,
                sources: list[str] = (), switches: Switches | None = None) -> list[_OutboxSink]:
    """The MQTT and webhook sinks `config` asks for. Each process needs its own outbox folder, and with
    `client_tag` its own MQTT client id, or two would deliver the same events and take each other's session.
    `sources`: the cameras of the run (for Home Assistant's entities); a process serving one source of a larger
    run (`client_tag`, a Ray source actor) removes no other camera's entities. `switches`: turned over MQTT."""
    sinks: list[_OutboxSink] = []
    if config.mqtt.url:
        mqtt = config.mqtt
        if client_tag and mqtt.client_id:
            mqtt = mqtt.model_copy(update={"client_id": f"{mqtt.client_id}-{client_tag}"})
        zones = {source: [z.name for z in config.events.zones if z.sources is None or source in z.sources]
                 for source in sources}
        sinks.append(MqttSink(mqtt, outbox_dir, list(sources), zones, remove_stale=client_tag is None,
                              switches=switches))
    sinks += [WebhookSink(url, config.webhooks, outbox_dir, i) for i, url in enumerate(config.webhooks.urls)]
    return sinks


def _text(payload) -> str:
    """An item's payload as sent: the event's own line (an outbox written by an older streamer held the object)."""
    return payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """For receivers: check X-Streamer-Signature against the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")
