"""The FastAPI application and `serve`, what `cllm ui` runs.

Security: the server listens on 127.0.0.1 unless told otherwise, and there only answers
requests naming a loopback host (no DNS rebinding). Every request must carry a token (a new
one at each start unless configured, shown in the URL printed, as Jupyter does; `--no-token`
goes without on loopback): `Authorization: Bearer TOKEN`, or the cookie set when the page is
opened once as `/?token=TOKEN`. Requests that change something are JSON POSTs (a form on
another site cannot send one), of bounded size. Nothing the page sends becomes a path.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app.config import AppConfig
from app.data import Pipeline, crawls
from app.jobs import Busy, Jobs
from app.llm import GenerateRequest, Generator
from core.errors import Unavailable, UserError
from crawler.urls import check_seed

log = structlog.get_logger()
STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024  # bytes of a request body (a prompt is at most 4,000 characters)
COOKIE = "cllm_token"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class CrawlRequest(BaseModel):
    seeds: list[str] = Field(min_length=1, max_length=20)
    max_pages: int | None = Field(None, ge=0, le=100_000)
    max_depth: int | None = Field(None, ge=0, le=100)


class TrainRequest(BaseModel):
    kind: Literal["update", "scratch"] = "update"
    steps: int | None = Field(None, ge=1, le=1_000_000)


class PromoteRequest(BaseModel):
    version: str = Field(pattern=r"^[0-9]{1,9}$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: AppConfig, config_file: str | None = None) -> FastAPI:
    home = Path(config.home).resolve()
    pipeline = Pipeline(home, config.model_name)
    jobs = Jobs(home, config_file)
    generator = Generator(pipeline, config.ui.max_generations)
    token = config.ui.token

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.stop_all()  # a training checkpoints and exits 130: resumable

    app = FastAPI(title="Crystalline", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

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

    if is_loopback(config.ui.host):
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

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return error(409, str(exc))

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    # --- crawl -----------------------------------------------------------------------------

    def job_status(kind: str) -> dict | None:
        job = jobs.get(kind)
        return job.status() if job else None

    @app.get("/api/crawl")
    def crawl_state():
        return crawls(home) | {"job": job_status("crawl")}

    @app.post("/api/crawl", status_code=202)
    def crawl_start(body: CrawlRequest):
        seeds = [check_seed(seed) for seed in body.seeds]  # URLs only: never a file here
        args = ["crawl", "--json", "--seeds", *seeds]
        for name in ("max_pages", "max_depth"):
            if getattr(body, name) is not None:
                args += [f"--{name.replace('_', '-')}", str(getattr(body, name))]
        return jobs.start("crawl", args).status()

    @app.post("/api/crawl/stop")
    def crawl_stop():
        return stop("crawl")

    def stop(kind: str) -> dict:
        job = jobs.get(kind)
        if job is None or not job.running:
            raise HTTPException(409, f"no {kind} started here is running")
        job.stop()
        return job.status()

    # --- training --------------------------------------------------------------------------

    @app.get("/api/training")
    def training_state():
        return {"run": pipeline.training(), "job": job_status("training")}

    @app.post("/api/training", status_code=202)
    def training_start(body: TrainRequest):
        args = ["update", "--no-wait"] if body.kind == "update" else ["train", "--from-scratch"]
        args += ["--steps", str(body.steps)] if body.steps else []
        return jobs.start("training", args).status()

    @app.post("/api/training/stop")
    def training_stop():
        return stop("training")  # SIGTERM: the trainer finishes its step and checkpoints

    # --- models ----------------------------------------------------------------------------

    @app.get("/api/models")
    def models():
        versions = pipeline.versions()
        champion = next((v["version"] for v in versions if "champion" in v["aliases"]), None)
        return {"name": config.model_name, "champion": champion, "versions": versions}

    def registered(ref: str):
        try:
            return pipeline.resolve(ref)
        except UserError as e:
            raise HTTPException(404, str(e)) from None

    @app.post("/api/models/promote")
    def promote(body: PromoteRequest):
        registered(body.version)
        return pipeline.promote(body.version)

    @app.post("/api/models/rollback")
    def rollback():
        champion = registered("@champion")
        if not champion.tags.get("parent_version"):
            raise HTTPException(409, f"champion {champion.ref} has no parent version to roll "
                                "back to")
        return pipeline.rollback()

    # --- generation ------------------------------------------------------------------------

    @app.post("/api/generate")
    def generate(body: GenerateRequest, request: Request):
        try:
            text = body.text()
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        version = registered(body.model)
        client = request.client.host if request.client else "unknown"
        refused = generator.claim(client)
        if refused:
            raise HTTPException(*refused)
        try:
            pieces = generator.stream(generator.model(version), body, text)
        except BaseException:
            generator.release(client)
            raise

        async def stream():
            try:
                async for piece in iterate_in_threadpool(pieces):
                    yield piece
            finally:
                generator.release(client)

        # released by the stream's end, or here if the stream never started
        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8",
                                 headers={"X-Model-Version": version.ref,
                                          "Cache-Control": "no-store"},
                                 background=BackgroundTask(generator.release, client))

    return app


def serve(config: AppConfig, config_file: str | None = None, no_token: bool = False) -> None:
    """Listen and serve until Ctrl-C or SIGTERM; running jobs are stopped on the way out."""
    ui = config.ui
    if no_token and not is_loopback(ui.host):
        raise UserError(f"--host {ui.host} is reachable from other machines: drop --no-token "
                        "(a token is made at start, or give --token SECRET), or listen on "
                        "127.0.0.1")
    if not ui.token and not no_token:
        ui.token = secrets.token_urlsafe(24)
    app = create_app(config, config_file)
    family = socket.AF_INET6 if ":" in ui.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ui.host.strip("[]"), ui.port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {ui.host}:{ui.port} ({e.strerror}): choose another "
                        "--port or --host") from None
    shown = f"[{ui.host}]" if ":" in ui.host else ui.host
    url = f"http://{shown}:{ui.port}/" + (f"?token={ui.token}" if ui.token else "")
    log.info("ui_start", url=url, home=str(Path(config.home).resolve()))
    print(f"cllm ui: open {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
