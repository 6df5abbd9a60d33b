"""Naming sources: what is a URL, what is live, and how a source may be shown or used in a file name.

A source's URL may carry secrets; everything that leaves the reader (logs, events, errors, file names, topics)
goes through `display_name` first.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote


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


# A host (name, IPv4 or [IPv6]) with an optional port, followed by the end or the start of a path/query/fragment.
_HOST_AT_START = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:\d{1,5})?(?=[/?#]|$)")


def _split_secrets(url: str) -> tuple[str, str, str]:
    """(scheme, userinfo, the rest from the host on). A password typed without escaping may hold '#', '/', '?'
    or '@', which end a standard parser's authority early and hand part of it to the path, query or fragment:
    the userinfo is taken to end at the last '@' that is followed by a host, wherever it stands. An '@' in a
    query (an e-mail address) may then hide more than the credentials: never less."""
    scheme, _, rest = url.partition("://")
    for at in reversed([i for i, c in enumerate(rest) if c == "@"]):
        if _HOST_AT_START.match(rest, at + 1):
            return scheme, rest[:at], rest[at + 1 :]
    return scheme, "", rest


# What follows the host: path, query, fragment. A plain split that never fails: urllib's refuses a URL with a
# broken [IPv6] host or a port that is no number, and the URL must still be shown without its secrets.
_AFTER_SCHEME = re.compile(r"(?P<host>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?", re.S)


def _parts(url: str) -> tuple[str, str, re.Match]:
    """(scheme, userinfo, the match of host, path, query and fragment)."""
    scheme, userinfo, rest = _split_secrets(url)
    return scheme.lower(), userinfo, _AFTER_SCHEME.match(rest)


def display_name(source: str) -> str:
    """The source as it may appear in logs, events, errors and file names. Every part of a URL that can carry a
    secret is hidden: credentials are removed, query values (tokens, signatures of presigned links) become
    `***`, and the fragment is dropped. The path is kept: it names the stream (name a source, `NAME=URL`, to
    keep a secret in a path out of sight too)."""
    if not is_url(source):
        return source
    scheme, _, parts = _parts(source)
    query = "&".join(f"{pair.partition('=')[0]}=***" if "=" in pair else "***"
                     for pair in (parts["query"] or "").split("&") if pair)
    return f"{scheme}://{parts['host']}{parts['path']}" + (f"?{query}" if query else "")


def scrub(text: str, sources: list[str]) -> str:
    """`text` (an error message from anywhere) with every secret of these sources' URLs replaced: a last net
    under messages that quote a URL as it was given."""
    for source in sources:
        if not is_url(source):
            continue
        _, userinfo, parts = _parts(source)
        secrets = [userinfo, *userinfo.split(":", 1), parts["fragment"] or ""]
        secrets += [pair.partition("=")[2] or pair for pair in (parts["query"] or "").split("&")]
        if not any(secrets):
            continue
        text = text.replace(source, display_name(source))
        for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
            for form in {secret, unquote(secret), quote(secret, safe="")}:
                text = text.replace(form, "***")
    return text


_MEDIA_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".mpg",
                   ".mpeg", ".3gp", ".h264", ".h265", ".hevc", ".y4m", ".gif", ".jpg", ".jpeg", ".png"}


def safe_name(name: str) -> str:
    """A source's display name fit for file names, MQTT topic levels and URL paths: a file's is its stem, as its
    run folder is named (`clips/street.mp4` is `street` in every file a run writes), a URL's its host and path."""
    if is_url(name):
        name = display_name(name)  # never a credential or a token in a file name
    elif ("/" in name or "\\" in name or Path(name).suffix.lower() in _MEDIA_SUFFIXES):
        name = Path(name.replace("\\", "/")).stem or name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.split("://", 1)[-1]).strip("._") or "source"
