"""`cllm serve`: an OpenAI-compatible API over the registry, for any OpenAI client:
`POST /v1/completions`, `POST /v1/chat/completions` (both with `"stream": true`, as server-sent
events) and `GET /v1/models`.

It serves `models:/cllm@champion` by default and follows the alias: when it moves (a
promotion, a rollback), the new version is loaded beside the old one and swapped in whole;
a request under way finishes on the version it began with. Every answer's `model` names the
version that made it (`cllm/3`). Security and limits are every server's (app/security.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Literal

import structlog
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from app.config import AppConfig
from app.llm import (
    CHAT_TURN,
    MAX_MESSAGES,
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    SamplingFields,
    Slots,
    in_thread,
    transcript,
    until,
)
from app.security import choose_token, listen, secure
from engine.checkpoint import Model, load_model
from engine.generate import SamplingConfig, generate_tokens, warm_up
from pipeline.registry import Registry, Version, parse_ref

log = structlog.get_logger()
ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
               503: "server_error"}


def error(status: int, message: str) -> JSONResponse:
    """An error as OpenAI's API answers one, which its clients read."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": None}}, status_code=status)


class Sampling(SamplingFields):
    model: str = ""
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0, le=2)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stop: str | list[str] | None = None

    def sampling(self, default_tokens: int) -> SamplingConfig:
        tokens = self.max_completion_tokens or self.max_tokens or default_tokens
        return SamplingConfig(max_tokens=tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed, stop_at_eot=not self.ignore_eos)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(Sampling):
    prompt: str | list[str] = ""

    def text(self) -> str:
        if isinstance(self.prompt, list) and len(self.prompt) > 1:
            raise ValueError("prompt: one prompt at a time (a list of one string at most)")
        text = self.prompt if isinstance(self.prompt, str) else "".join(self.prompt)
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt: at most {MAX_PROMPT_CHARS} characters")
        return text


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)


class Served:
    """The version being served; with an alias, a thread that follows it every `poll`
    seconds and swaps a newly pointed version in once it is loaded."""

    def __init__(self, registry: Registry, ref: str, poll: float):
        self.registry, self.poll = registry, poll
        self.name, self.alias, _ = parse_ref(ref, registry.name)
        self.followed = f"{self.name}@{self.alias}" if self.alias else None
        self.current = self._load(registry.resolve(ref))
        if self.alias:
            threading.Thread(target=self._follow, daemon=True).start()

    def _load(self, version: Version) -> tuple[Version, Model]:
        return version, load_model(self.registry.pull(version.ref))

    def _follow(self) -> None:
        while True:
            time.sleep(self.poll)
            try:
                pointed = self.registry.by_alias(self.alias, self.name)
                if pointed and pointed.version != self.current[0].version:
                    left = self.current[0].ref
                    self.current = self._load(pointed)  # one assignment: the swap is whole
                    log.info("serve_swap", alias=self.followed, left=left, now=pointed.ref)
            except Exception as e:  # a registry away for a while: serve on, look again
                log.warning("serve_follow_failed", alias=self.followed, error=str(e)[:300])

    def names(self, version: Version) -> set[str]:
        """What a request's `model` may say to get this server's model."""
        return {"", self.name, version.ref, *([self.followed] if self.followed else [])}


class Answer:
    """One generation: its text in pieces, then how many tokens it took and why it ended."""

    def __init__(self, model: Model, text: str, sampling: SamplingConfig, stops: list[str]):
        self.model, self.sampling, self.stops = model, sampling, stops
        self.prompt_ids = model.tokenizer.encode(text)
        self.completion_tokens, self.finish_reason = 0, "stop"

    def pieces(self) -> Iterator[str]:
        def ids():
            for token in generate_tokens(self.model, self.prompt_ids, self.sampling):
                self.completion_tokens += 1
                yield token
            if self.completion_tokens >= self.sampling.max_tokens:
                self.finish_reason = "length"

        return until(self.model.tokenizer.stream_decode(ids()), self.stops)

    def usage(self) -> dict:
        prompt = len(self.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens}


def create_serving_app(config: AppConfig, registry: Registry | None = None) -> FastAPI:
    settings = config.serve
    registry = registry or Registry(config.home, config.model_name, config.registry_attempts)
    served = Served(registry, settings.model, settings.poll)
    threading.Thread(target=warm_up, daemon=True).start()  # generation's kernels compile
    slots = Slots(settings.max_generations)
    app = FastAPI(title="Crystalline", docs_url=None, redoc_url=None, openapi_url=None)
    secure(app, settings.host, settings.token, error)

    @app.get("/v1/models")
    def models():
        version = served.current[0]
        ids = [version.ref, *([served.followed] if served.followed else [])]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0,
                                            "owned_by": "crystalline"} for i in ids]}

    def answer(body: Sampling, text: str, default_tokens: int, kind: str, chunk, whole):
        version, model = served.current  # this request's, whatever the alias does meanwhile
        if body.model not in served.names(version):
            raise HTTPException(404, f"model {body.model!r} is not served here: ask for "
                                f"{version.ref} or {served.followed or served.name}")
        client = uuid.uuid4().hex  # an API serves many requests of one client at once
        if refused := slots.claim(client):
            raise HTTPException(*refused)
        done = BackgroundTask(slots.release, client)
        result = Answer(model, text, body.sampling(default_tokens), body.stops())
        head = {"id": f"{kind}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": version.ref}
        if not body.stream:
            try:
                text = "".join(result.pieces())
            finally:
                slots.release(client)
            return head | whole(text, result.finish_reason) | {"usage": result.usage()}

        async def events():
            try:
                for event in chunk(None, None, first=True):
                    yield f"data: {json.dumps(head | event)}\n\n"
                async for piece in in_thread(result.pieces()):
                    for event in chunk(piece, None):
                        yield f"data: {json.dumps(head | event)}\n\n"
                for event in chunk(None, result.finish_reason):
                    yield f"data: {json.dumps(head | event)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                slots.release(client)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"}, background=done)

    @app.post("/v1/completions")
    def completions(body: CompletionRequest):
        def chunk(piece, finish, first=False):
            if first:
                return []
            return [{"object": "text_completion", "choices": [
                {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}]}]

        def whole(text, finish):
            return {"object": "text_completion", "choices": [
                {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        try:
            text = body.text()
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return answer(body, text, 16, "cmpl", chunk, whole)

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatRequest):
        def chunk(piece, finish, first=False):
            delta = {"role": "assistant", "content": ""} if first else \
                {"content": piece} if piece is not None else {}
            return [{"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}]

        def whole(text, finish):
            return {"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text.strip()},
                 "logprobs": None, "finish_reason": finish}]}

        try:
            text = transcript([(m.role, m.content) for m in body.messages])
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        # the model would go on to write the user's next turn too
        body.stop = [*body.stops(), f"\n{CHAT_TURN['user']}:"]
        return answer(body, text, 200, "chatcmpl", chunk, whole)

    return app


def serve_models(config: AppConfig, no_token: bool = False) -> None:
    """Listen and serve until Ctrl-C or SIGTERM."""
    choose_token(config.serve, no_token)
    listen(create_serving_app(config), config.serve, "cllm serve", "/v1/models")
