"""Home Assistant MQTT discovery: every camera shows up in Home Assistant by itself, with no YAML.

Retained configs under `<mqtt.discovery_prefix>/<component>/streamer_<source>/<object>/config`, each with a stable
`unique_id`, the camera's device and `availability` on `<topic_prefix>/availability`:
- per camera: the last event (`sensor`, its JSON as attributes), every event (`event`, for automations), the
  latest snapshot of anything (`camera`, JPEG on `<topic_prefix>/<source>/snapshot`),
  whether its picture comes (`binary_sensor`, connectivity), its frame and detection rates, switches for its
  detection, recording and snapshots (`switch`, those the configuration has) and, per zone, how many objects are
  in it;
- per camera, zone and label, once the label first enters the zone: its occupancy and count there;
- per camera and label, once the label is first seen: occupancy (`binary_sensor`, as Frigate's integration
  has), how many there are (`sensor`) and the latest snapshot (`image`, a JPEG on
  `<topic_prefix>/<source>/<label>/snapshot`).
States are retained (one published right after its config may be missed otherwise), and everything is sent
again when Home Assistant says `online` on `<discovery_prefix>/status`. A camera or zone no longer in the run's
configuration has its entities removed (an empty retained config), found among the retained configs the broker
gives back at connect.
"""

from __future__ import annotations

import hashlib
import json
import re

from streamer.records import EVENT_TYPES
from streamer.sources import safe_name

MANUFACTURER = "streamer"
_SWITCH_NAMES = {"detect": "Detect", "record": "Recordings", "snapshots": "Snapshots"}  # as Frigate names them
_SWITCH_ICONS = {"detect": "mdi:motion-sensor", "record": "mdi:record-rec", "snapshots": "mdi:image-multiple"}


def level(text: str, most: int = 64) -> str:
    """A name the model or a user gave (a label, a grounded phrase, a zone) as one MQTT topic level: ASCII letters,
    digits and `._-` only (`+ # /` would be wildcards or levels, and Home Assistant's discovery takes no other
    characters), at most `most` long; a space is `_` (so "traffic light" keeps the id it always had). A name that
    lost letters on the way (another script, a wildcard, a long tail) ends with a short hash of the whole, so two
    such names never share a topic."""
    kept = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    if kept and len(kept) <= most and re.fullmatch(r"[A-Za-z0-9._ -]*", text.strip()):
        return kept
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return (kept[: most - 9].rstrip("._") + "_" + digest).lstrip("_")


def camera_topic(prefix: str, source: str, *levels: str) -> str:
    """`<prefix>/<camera>/<levels...>`: a camera's MQTT topics, the camera named as in file names and pages."""
    return "/".join([prefix, safe_name(source), *levels])


def _slug(text: str) -> str:
    """A name as part of a Home Assistant id: `level`'s, lower case, `_` for `.` and `-`."""
    return re.sub(r"[.-]", "_", level(text).lower())


class Discovery:
    """What to publish for the cameras of one process; each method returns (topic, payload, retain) items."""

    def __init__(self, prefix: str, topic_prefix: str, sources: list[str], zones: dict[str, list[str]],
                 switches: tuple[str, ...] = ()) -> None:
        self.prefix = prefix.rstrip("/")
        self.switches = switches  # the camera switches there are (`switches.Switches.names`)
        self.topics = topic_prefix.rstrip("/")
        self.availability = f"{self.topics}/availability"
        self.sources = list(sources)
        self.zones = zones  # source -> names of the zones that apply to it
        self.labels: dict[str, set[str]] = {}  # source -> labels seen, whose entities exist
        self.zone_labels: dict[str, set[tuple[str, str]]] = {}  # source -> (zone, label) seen inside it

    def node(self, source: str) -> str:
        return f"streamer_{_slug(safe_name(source))}"

    def config_topic(self, component: str, source: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node(source)}/{object_id}/config"

    def state_topic(self, source: str, *levels: str) -> str:
        return camera_topic(self.topics, source, *levels)

    def _config(self, component: str, source: str, object_id: str, name: str, **fields) -> tuple[str, str, bool]:
        node = self.node(source)
        config = {
            "name": name, "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}",
            "device": {"identifiers": [node], "name": source, "manufacturer": MANUFACTURER,
                       "model": "Florence-2 camera"},
            "availability": [{"topic": self.availability, "payload_available": "online",
                              "payload_not_available": "offline"}],
            **fields,
        }
        return self.config_topic(component, source, object_id), json.dumps(config), True

    def camera(self, source: str) -> list[tuple[str, str, bool]]:
        """The entities every camera has: the last event, whether its picture is coming (connectivity: off from
        its `source_down` to the next frame), its frame rate, its switches, and a count per zone."""
        out = [self._config("sensor", source, "last_event", "Last event",
                            state_topic=self.state_topic(source, "last_event"), value_template="{{ value_json.type }}",
                            json_attributes_topic=self.state_topic(source, "last_event"), icon="mdi:cctv"),
               self._config("binary_sensor", source, "status", "Status", device_class="connectivity",
                            state_topic=self.state_topic(source, "status"), payload_on="ON", payload_off="OFF"),
               self._config("sensor", source, "fps", "Frame rate", state_topic=self.state_topic(source, "fps"),
                            unit_of_measurement="fps", state_class="measurement", icon="mdi:speedometer"),
               # keyframes the model answered per second (Frigate's detection fps)
               self._config("sensor", source, "detection_fps", "Detection rate", unit_of_measurement="fps",
                            state_topic=self.state_topic(source, "detection_fps"), state_class="measurement",
                            icon="mdi:eye"),
               # the latest snapshot of anything it saw, as a camera entity (a picture in a dashboard card)
               self._config("camera", source, "snapshot", "Latest snapshot",
                            topic=self.state_topic(source, "snapshot")),
               # every event as Home Assistant's own event entity (automations trigger on its type)
               self._config("event", source, "events", "Events", state_topic=self.state_topic(source, "events"),
                            event_types=list(EVENT_TYPES), icon="mdi:motion-sensor",
                            value_template='{"event_type": {{ value_json.type | tojson }}}')]
        for name in self.switches:  # Frigate's topics: <prefix>/<camera>/<switch>/set and .../state
            out.append(self._config("switch", source, name, _SWITCH_NAMES[name], entity_category="config",
                                    command_topic=self.state_topic(source, name, "set"),
                                    state_topic=self.state_topic(source, name, "state"), payload_on="ON",
                                    payload_off="OFF", icon=_SWITCH_ICONS[name]))
        for zone in self.zones.get(source, []):
            out.append(self._config("sensor", source, f"zone_{_slug(zone)}_count", f"{zone} objects",
                                    state_topic=self.state_topic(source, "zone", level(zone), "count"),
                                    state_class="measurement", icon="mdi:vector-polygon"))
        return out

    def label(self, source: str, label: str) -> list[tuple[str, str, bool]]:
        """A label's entities, the first time it is seen on a camera (nothing after that)."""
        seen = self.labels.setdefault(source, set())
        if label in seen:
            return []
        seen.add(label)
        return self._label_configs(source, label)

    def _label_configs(self, source: str, label: str) -> list[tuple[str, str, bool]]:
        slug, name = _slug(label), label.capitalize()
        return [
            self._config("binary_sensor", source, f"{slug}_occupancy", f"{name} occupancy", device_class="occupancy",
                         state_topic=self.state_topic(source, level(label), "occupancy"),
                         payload_on="ON", payload_off="OFF"),
            self._config("sensor", source, f"{slug}_count", f"{name} count", state_class="measurement",
                         state_topic=self.state_topic(source, level(label), "count")),
            self._config("image", source, f"{slug}_snapshot", f"{name} snapshot", content_type="image/jpeg",
                         image_topic=self.state_topic(source, level(label), "snapshot")),
        ]

    def zone_label(self, source: str, zone: str, label: str) -> list[tuple[str, str, bool]]:
        """A label's occupancy and count inside a zone, the first time the label enters it (as Frigate's
        integration has per zone and object)."""
        seen = self.zone_labels.setdefault(source, set())
        if (zone, label) in seen:
            return []
        seen.add((zone, label))
        return self._zone_label_configs(source, zone, label)

    def _zone_label_configs(self, source: str, zone: str, label: str) -> list[tuple[str, str, bool]]:
        slug, name = f"zone_{_slug(zone)}_{_slug(label)}", f"{zone} {label}"
        return [
            self._config("binary_sensor", source, f"{slug}_occupancy", f"{name} occupancy", device_class="occupancy",
                         state_topic=self.state_topic(source, "zone", level(zone), level(label), "occupancy"),
                         payload_on="ON", payload_off="OFF"),
            self._config("sensor", source, f"{slug}_count", f"{name} count", state_class="measurement",
                         state_topic=self.state_topic(source, "zone", level(zone), level(label), "count")),
        ]

    def everything(self) -> list[tuple[str, str, bool]]:
        """Every config known now: for Home Assistant coming back online."""
        out = [item for source in self.sources for item in self.camera(source)]
        for source, labels in self.labels.items():
            for label in sorted(labels):
                out += self._label_configs(source, label)
        for source, pairs in self.zone_labels.items():
            for zone, label in sorted(pairs):
                out += self._zone_label_configs(source, zone, label)
        return out

    def stale(self, topic: str) -> bool:
        """Whether a retained config found on the broker is one of ours for a camera or zone no longer run."""
        if not topic.startswith(self.prefix + "/"):
            return False
        parts = topic[len(self.prefix) + 1:].split("/")
        if len(parts) != 4 or parts[3] != "config":
            return False
        node, object_id = parts[1], parts[2]
        if not node.startswith("streamer_"):
            return False
        current = {self.node(s): s for s in self.sources}
        if node not in current:
            return True
        if object_id in _SWITCH_NAMES:  # a switch the configuration no longer has
            return object_id not in self.switches
        if object_id.startswith("zone_"):  # a zone's count, or a label's occupancy and count in it
            return not any(object_id.startswith(f"zone_{_slug(z)}_") for z in self.zones.get(current[node], []))
        return False
