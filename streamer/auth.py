"""Who may see the cameras: the HTTP server's credentials (`http.auth`), checked on every request.

A token (`Authorization: Bearer <token>`, for programs) or a user with a password hashed by `streamer password`
(scrypt; HTTP Basic for programs); a browser signs in once on the page's own login form and keeps a session
cookie (HttpOnly, SameSite=Strict, signed with a key this process makes at start, so it ends with the process, or
when its user signs out).
Secrets are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
SESSION_S = 12 * 3600
COOKIE = "streamer_session"


def hash_password(password: str) -> str:
    """`scrypt$<salt>$<hash>`, what `http.auth.password_hash` takes."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, hashed: str) -> bool:
    try:
        kind, salt, digest = hashed.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), dklen=len(want),
                             **_SCRYPT)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def valid_hash(hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 3 or parts[0] != "scrypt":
        return False
    try:
        return len(base64.b64decode(parts[1], validate=True)) >= 8 and len(base64.b64decode(parts[2], validate=True)) >= 16
    except ValueError:
        return False


class Guard:
    """The checks for one server. `auth`: the config's `http.auth` (None: everyone may see everything)."""

    _ENDED_KEPT = 10_000  # signed-out sessions remembered (each until it would have expired anyway)

    def __init__(self, auth) -> None:
        self.auth = auth
        self._key = secrets.token_bytes(32)
        self._ended: dict[str, int] = {}  # a signed-out session's cookie -> when it would have expired
        self._lock = threading.Lock()

    def challenges(self) -> list[str]:
        """The `WWW-Authenticate` values a 401 carries: what a client may answer with (Basic prompts a browser or
        a tool holding a user and password; Bearer tells a program a token is wanted)."""
        auth, out = self.auth, []
        if auth is not None and auth.user:
            out.append('Basic realm="streamer", charset="UTF-8"')
        if auth is not None and auth.token:
            out.append('Bearer realm="streamer"')
        return out

    def end(self, headers) -> None:
        """Sign out: the request's session cookie is refused from now on (a copy of it included)."""
        value = _cookie(headers.get("Cookie", ""), COOKIE)
        if not value or not self._session_ok(value):
            return
        now = int(time.time())
        with self._lock:
            self._ended = {v: until for v, until in self._ended.items() if until > now}
            if len(self._ended) >= self._ENDED_KEPT:  # the oldest first: they end soonest anyway
                self._ended.pop(min(self._ended, key=self._ended.get))
            self._ended[value] = int(value.partition(".")[0].partition("-")[0])

    @property
    def on(self) -> bool:
        return self.auth is not None

    def credentials(self, token: str | None = None, user: str | None = None, password: str | None = None) -> bool:
        auth = self.auth
        if auth is None:
            return True
        if token and auth.token and hmac.compare_digest(token.encode(), auth.token.encode()):
            return True
        if user is not None and password is not None and auth.user and auth.password_hash:
            return hmac.compare_digest(user.encode(), auth.user.encode()) & check_password(password, auth.password_hash)
        return False

    def slow(self, headers) -> bool:
        """Whether checking these headers runs scrypt (tens of ms): HTTP Basic's password, where one is asked."""
        return self.auth is not None and headers.get("Authorization", "").partition(" ")[0].lower() == "basic"

    def request(self, headers) -> bool:
        """Whether a request's headers carry credentials: a bearer token, HTTP Basic, or a session cookie."""
        if self.auth is None:
            return True
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and self.credentials(token=value.strip()):
            return True
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.credentials(user=user, password=password)
        return self._session_ok(_cookie(headers.get("Cookie", ""), COOKIE))

    def session(self) -> str:
        """A new session cookie's value: when it ends (and a nonce, so two sessions never share a value) and its
        signature."""
        until = f"{int(time.time()) + SESSION_S}-{secrets.token_hex(8)}"
        return until + "." + hmac.new(self._key, until.encode(), hashlib.sha256).hexdigest()

    def _session_ok(self, value: str | None) -> bool:
        if not value or "." not in value:
            return False
        until, _, signature = value.partition(".")
        if value in self._ended:
            return False
        expected = hmac.new(self._key, until.encode(), hashlib.sha256).hexdigest()
        # as bytes: a str with a non-ASCII character (a header is Latin-1) is a TypeError in compare_digest
        ends = until.partition("-")[0]
        return (hmac.compare_digest(signature.encode(), expected.encode()) and ends.isascii() and ends.isdigit()
                and int(ends) > time.time())


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
