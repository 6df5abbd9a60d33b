"""Sign-in: the dependency every other router takes (`signed_in`), the page's own login form and its session
cookie, sign-out, and the check that a write comes from a page of our own (`same_site`)."""

from __future__ import annotations

import asyncio
import html
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from streamer.auth import COOKIE, SESSION_S, Guard
from streamer.serving import admitted, body_within
from streamer.web.site import Here

PAGES = ("/", "/review")  # what a person opens: signed out, they are sent to the sign-in form and back

router = APIRouter(tags=["sign-in"])


class SignInFirst(Exception):
    """A request without credentials: a person opening a page gets the form, a program a 401 (`answer`)."""


async def signed_in(request: Request) -> None:
    """The dependency of every router but this one: a bearer token, HTTP Basic, or the login's session cookie.
    HTTP Basic's password is checked with scrypt (tens of ms) on a worker thread, the rest at once."""
    if not await admitted(request.app.state.site.guard, request.headers):
        raise SignInFirst()


async def same_site(request: Request) -> None:
    """A write (a sign-in, a switch, a review mark) from another site's page is refused: a browser always says
    whose page it is."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "a write from another site's page is refused")


SignedIn = [Depends(signed_in)]


def answer(request: Request, exc: SignInFirst) -> Response:
    site = request.app.state.site
    if request.url.path in PAGES and "authorization" not in request.headers and request.method == "GET":
        then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": local(then)}), 303)
    # a program: asked for credentials the standard way (RFC 9110 11.6.1)
    response = PlainTextResponse("sign in first: a bearer token, HTTP Basic, or the page's login\n", 401)
    for challenge in site.guard.challenges():
        response.headers.append("WWW-Authenticate", challenge)
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(site: Here, next: str = "/") -> HTMLResponse:
    """The sign-in form; `next`: the page to go back to."""
    return HTMLResponse(form(site.guard, then=local(next)))


_FORM = {"type": "object", "properties": {k: {"type": "string"} for k in ("user", "password", "token", "next")}}


@router.post("/login", dependencies=[Depends(same_site)], response_class=HTMLResponse, status_code=303,
             openapi_extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": _FORM}}}})
async def login(request: Request, site: Here) -> Response:
    """The login form posted: a session cookie for whoever gives the credentials, one slow refusal else."""
    body = await body_within(request, 4096)
    if body is None:
        raise HTTPException(400, "a login form is a few fields")
    fields = parse_qs(body.decode("utf-8", "replace"))
    field = lambda name: fields.get(name, [None])[0]  # noqa: E731
    then = local(field("next"))
    if await run_in_threadpool(site.guard.credentials, field("token"), field("user"), field("password")):  # scrypt
        return _redirect(then, cookie=site.guard.session())
    await asyncio.sleep(0.5)  # guessing stays slow
    return HTMLResponse(form(site.guard, failed=True, then=then), 401)


@router.post("/logout", dependencies=[Depends(same_site)], status_code=303)
def logout(request: Request, site: Here) -> Response:
    """The session ends: its cookie is refused from now on, wherever it was copied."""
    site.guard.end(request.headers)
    return _redirect("/login", cookie="")


def _redirect(where: str, cookie: str) -> Response:
    response = Response(status_code=303, headers={"Location": where})
    response.headers.append("Set-Cookie", f"{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; "
                                          f"Max-Age={SESSION_S if cookie else 0}")
    return response


def form(guard: Guard, failed: bool = False, then: str = "/") -> str:
    """The page's own login form, with the fields the configured credentials need; `then`: the page to go back to."""
    auth = guard.auth
    fields = ""
    if auth is not None and auth.user:
        fields += ('<label>user <input name="user" autocomplete="username" autofocus></label><label>password <input '
                   'name="password" type="password" autocomplete="current-password"></label>')
    if auth is not None and auth.token:
        fields += '<label>token <input name="token" type="password"></label>'
    note = '<p class="failed">those credentials are not right</p>' if failed else ""
    return ('<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            '<title>streamer: sign in</title><style>body { font-family: system-ui, sans-serif; background: #111; '
            'color: #eee; display: grid; place-items: center; min-height: 90vh; margin: 0; } form { display: grid; '
            'gap: 0.8em; background: #1b1b1b; padding: 1.5em; border-radius: 6px; min-width: 16em; } label { display: '
            'grid; gap: 0.3em; } input, button { font: inherit; padding: 0.4em; } .failed { color: #f88; }</style>'
            f'</head><body><main><h1>streamer</h1>{note}<form method="post" action="/login">{fields}'
            f'<input type="hidden" name="next" value="{html.escape(then)}"><button type="submit">Sign in</button>'
            '</form></main></body></html>')


def local(path: str | None) -> str:
    """Where a sign-in may send the browser back to: a path on this server, never another site (`//host`,
    `/\\host`, a scheme, a control character); anything else is the live page."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or "\\" in path:
        return "/"
    if any(ord(c) < 32 or c == "\x7f" for c in path) or urlsplit(path).netloc or urlsplit(path).scheme:
        return "/"
    return quote(path, safe="/?&=%:@+,;~!$'()*")  # a header is Latin-1: anything else percent-encoded


def signout(request: Request) -> str:
    """A sign-out button where a page was opened with a session (Basic and tokens have none to end)."""
    if not request.app.state.site.guard.on or "authorization" in request.headers:
        return ""
    return ('<form method="post" action="/logout" style="display:inline; margin-left:1em">'
            '<button type="submit">sign out</button></form>')
