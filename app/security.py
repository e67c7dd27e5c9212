"""What every server of the pipeline (`cllm ui`, `cllm serve`) does the same way: listen on
127.0.0.1 unless told otherwise, and there only answer requests naming a loopback host (no
DNS rebinding); ask every request for a token (made at start unless configured, shown in the
URL printed, as Jupyter does; `--no-token` goes without, on loopback only): `Authorization:
Bearer TOKEN`, or for pages the cookie set when one is opened as `/?token=TOKEN`; take only
JSON POSTs of bounded size (a form on another site cannot send one); answer bad input with a
4xx and a JSON error (in each server's own format, `error`).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from collections.abc import Callable

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from core.errors import Unavailable, UserError

log = structlog.get_logger()
MAX_BODY = 64 * 1024  # bytes of a request body (a prompt is at most 4,000 characters)
COOKIE = "cllm_token"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
ErrorResponse = Callable[[int, str], Response]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def secure(app: FastAPI, host: str, token: str, error: ErrorResponse) -> None:
    """The token, the JSON bodies and the loopback host rule, on every request of `app`."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token:
            given = request.cookies.get(COOKIE) or \
                request.headers.get("authorization", "").removeprefix("Bearer ")
            query = request.query_params.get("token")
            if query is not None and request.url.path == "/" and \
                    secrets.compare_digest(query.encode(), token.encode()):
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
            if not secrets.compare_digest(given.encode(), token.encode()):
                return error(401, "a token is required: open the page as /?token=TOKEN or send "
                             "Authorization: Bearer TOKEN")
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0].strip() != \
                    "application/json":
                return error(415, "send the request body as JSON (Content-Type: "
                             "application/json)")
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return error(411, "the request needs a Content-Length")
            if int(length) > MAX_BODY:
                return error(413, f"the request body is {int(length):,} bytes; at most "
                             f"{MAX_BODY:,}")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = \
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    if is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        if any(p["type"] == "json_invalid" for p in problems):
            return error(400, "the request body is not valid JSON")
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return error(422, f"{where}: {first['msg']}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return error(400, str(exc))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable):
        return error(503, str(exc))


def choose_token(settings, no_token: bool) -> None:
    """The token `settings` (host, token) serve with: configured, none (`--no-token`, loopback
    only), or a new one."""
    if no_token and not is_loopback(settings.host):
        raise UserError(f"--host {settings.host} is reachable from other machines: drop "
                        "--no-token (a token is made at start, or give --token SECRET), or "
                        "listen on 127.0.0.1")
    if not settings.token and not no_token:
        settings.token = secrets.token_urlsafe(24)


def listen(app: FastAPI, settings, command: str, path: str = "/") -> None:
    """Serve `app` on `settings` (host, port, token) until Ctrl-C or SIGTERM, having printed
    the address to open (with the token)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host.strip("[]"), settings.port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {settings.host}:{settings.port} ({e.strerror}): "
                        "choose another --port or --host") from None
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown}:{settings.port}{path}" + \
        (f"?token={settings.token}" if settings.token else "")
    log.info(f"{command.split()[-1]}_start", url=url)
    print(f"{command}: open {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
