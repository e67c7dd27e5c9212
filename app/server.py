"""The FastAPI application and `serve`, what `cllm ui` runs. Its security is every server's
(app/security.py); nothing the page sends becomes a path.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from app.config import AppConfig
from app.data import Pipeline, crawls, dropped
from app.jobs import Busy, Jobs
from app.llm import GenerateRequest, Generator, in_thread
from app.security import choose_token, listen, secure
from core.errors import UserError
from crawler.urls import check_seed
from engine.generate import warm_up as warm_up_generation

STATIC = Path(__file__).resolve().parent / "static"


class CrawlRequest(BaseModel):
    seeds: list[str] = Field(min_length=1, max_length=20)
    max_pages: int | None = Field(None, ge=0, le=100_000)
    max_depth: int | None = Field(None, ge=0, le=100)


class TrainRequest(BaseModel):
    kind: Literal["update", "scratch"] = "update"
    steps: int | None = Field(None, ge=1, le=1_000_000)


class PromoteRequest(BaseModel):
    version: str = Field(pattern=r"^[0-9]{1,9}$")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: AppConfig, config_file: str | None = None) -> FastAPI:
    home = Path(config.home).resolve()
    pipeline = Pipeline(home, config.model_name, config.registry_attempts)
    jobs = Jobs(home, config_file)
    generator = Generator(pipeline, config.ui.max_generations)
    token = config.ui.token

    def warm_up() -> None:
        # MLflow takes seconds to import and open, generation's kernels to load: now,
        # not when the Models or the LLM tab first asks
        pipeline.warm_up()
        warm_up_generation()  # (the route below is named generate too)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=warm_up, daemon=True).start()
        yield
        jobs.stop_all()  # a training checkpoints and exits 130: resumable

    app = FastAPI(title="Crystalline", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    secure(app, config.ui.host, token, error)

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
        return crawls(home, config.database_url, config.crawl.frontier) | \
            {"job": job_status("crawl")}

    @app.get("/api/crawl/{crawl_id}/dropped")
    def crawl_dropped(crawl_id: str):
        reasons = dropped(home, crawl_id)
        if reasons is None:
            raise HTTPException(404, f"no dropped documents recorded for crawl {crawl_id!r}")
        return {"crawl_id": crawl_id, "reasons": reasons}

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

    @app.get("/api/models/history")
    def history():
        return {"moves": pipeline.history()}

    @app.get("/api/models/{version}/lineage")
    def model_lineage(version: str):
        if not version.isdigit() or len(version) > 9:
            raise HTTPException(422, "version: a version number")
        registered(version)
        return pipeline.lineage(version)

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
                async for piece in in_thread(pieces):
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
    choose_token(config.ui, no_token)
    listen(create_app(config, config_file), config.ui, "cllm ui")
