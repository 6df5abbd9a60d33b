"""Naming sources: what is a URL, what is live, and how a source may be shown or used in a file name.

A source's URL may carry secrets; everything that leaves the reader (logs, events, errors, file names, topics)
goes through `display_name` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def is_url(source: str) -> bool:
    return "://" in source


def is_live(source: str, live: bool | None = None) -> bool:
    """A source is live when it says so, else when it is a URL (files are not)."""
    return is_url(source) if live is None else live


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
