"""Naming sources: what is a URL, what is live, and how a source may be shown or used in a file name.

A source's URL may carry secrets; everything that leaves the reader (logs, events, errors, file names, topics)
goes through `display_name` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def is_url(source: str) -> bool:
    return "://" in source


# Protocols that carry streams without an end: whatever they serve is a camera.
STREAMING_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp"})


def guess_live(source: str, live: bool | None = None) -> bool | None:
    """Whether a source is a camera (run in real time, reconnected, never ending) or a file (every frame, once).

    What the source says wins. Files on disk are files; RTSP and other streaming protocols are cameras. For any
    other URL (HTTP, HLS, object-store links) it depends on the media, which only opening it tells: None.
    """
    if live is not None:
        return live
    if not is_url(source):
        return False
    return True if source.split("://", 1)[0].lower() in STREAMING_SCHEMES else None


def display_name(source: str) -> str:
    """The source as it may appear in logs, events and errors: credentials removed from URLs."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def safe_name(name: str) -> str:
    """A source's display name fit for file names, MQTT topic levels and URL paths."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.split("://", 1)[-1]).strip("._") or "source"
