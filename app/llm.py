"""Generation for the LLM tab: a registered version chosen by alias or number, the limits on
every input, one generation per client at a time, and the text streamed as it is produced."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from engine.checkpoint import Model, load_model
from engine.generate import SamplingConfig, generate_text

MAX_PROMPT_CHARS = 4000  # the model sees at most its context window of it anyway
MAX_NEW_TOKENS = 1000
MAX_MESSAGES = 50
MODELS_KEPT = 2  # loaded versions kept in memory
# The page names a version by alias or number only: the model's name is the configured one
# and nothing the client sends becomes a path.
MODEL_CHOICE = re.compile(r"@[A-Za-z0-9_-]{1,40}|[0-9]{1,9}|latest")
CHAT_TURN = {"user": "User", "assistant": "Assistant"}
# Streamed text: a chunk at most this often. 50 a second is smooth to read (a screen shows
# 60 frames a second); each chunk costs the server's event loop, which holds the GIL the
# generation needs, and at 200 a second that took a sixth of the generation's speed.
GATHER_S = 0.02


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class SamplingFields(BaseModel):
    """What both APIs (this one and the OpenAI-compatible one, app/serving.py) take alike;
    their temperatures differ (OpenAI's default 1 and at most 2)."""
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    ignore_eos: bool = False  # vLLM's name: go on past the end of a text, to max_tokens


class GenerateRequest(SamplingFields):
    model: str = "@champion"
    mode: Literal["generate", "chat"] = "generate"
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)  # generate: the text to continue
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)  # chat
    max_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.8, ge=0, le=5)
    top_k: int | None = Field(None, ge=1, le=1_000_000)

    @field_validator("model")
    @classmethod
    def _model_choice(cls, value: str) -> str:
        if not MODEL_CHOICE.fullmatch(value):
            raise PydanticCustomError("model_choice", "must be an alias such as @champion, a "
                                      "version number, or latest")
        return value

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_k=self.top_k, top_p=self.top_p, seed=self.seed,
                              stop_at_eot=not self.ignore_eos)

    def text(self) -> str:
        """What the model continues: the prompt, or the chat as a transcript ending with the
        assistant's turn. Raises ValueError when it is over the limit."""
        if self.mode == "generate":
            return self.prompt
        return transcript([(m.role, m.content) for m in self.messages])


def transcript(turns: list[tuple[str, str]]) -> str:
    """A chat as the text the model continues: `User: ...` and `Assistant: ...` lines (a
    system message first, as it is), ending with the assistant's turn to answer. Raises
    ValueError for a chat that does not end with the user, or is over the limit."""
    if not turns or turns[-1][0] != "user":
        raise ValueError("a chat must end with a user message")
    text = "".join(content.strip() + "\n" if role == "system" else
                   f"{CHAT_TURN[role]}: {content.strip()}\n" for role, content in turns)
    text += f"{CHAT_TURN['assistant']}:"
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the conversation is {len(text)} characters, more than "
                         f"{MAX_PROMPT_CHARS}: start a new chat")
    return text


def until(pieces: Iterator[str], stops: str | list[str]) -> Iterator[str]:
    """The pieces up to the first of the `stops` (excluded), holding back only a tail that
    could be the start of one, so the text still streams."""
    stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
    held = ""
    for piece in pieces:
        held += piece
        cuts = [cut for stop in stops if (cut := held.find(stop)) >= 0]
        if cuts:
            if min(cuts):
                yield held[:min(cuts)]
            return
        keep = max((k for stop in stops for k in range(min(len(stop) - 1, len(held)), 0, -1)
                    if stop.startswith(held[-k:])), default=0)
        if len(held) > keep:
            yield held[: len(held) - keep]
            held = held[len(held) - keep :]
    if held:
        yield held


async def in_thread(pieces: Iterator[str]) -> AsyncIterator[str]:
    """The pieces, made in a thread of their own, as they come: those made since the last
    chunk go together in the next, a chunk at most every GATHER_S. Starlette's
    `iterate_in_threadpool` sends every piece into a worker thread and back (two thread
    switches a token) and the generation waits on each; here it never waits, and a chunk
    (the event loop, HTTP, the client: far more than a piece) carries a few tokens.
    Closing this (the client went away) stops the generation at its next piece."""
    loop = asyncio.get_running_loop()
    ready: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    wake, finished = asyncio.Event(), asyncio.Event()
    outcome: list[BaseException | None] = []  # set when the pieces are done

    def signal(event: asyncio.Event) -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is closed: the server is stopping
            stop.set()

    def make() -> None:
        error = None
        try:
            for piece in pieces:
                with lock:
                    ready.append(piece)
                    first = len(ready) == 1
                if first:  # otherwise a wake-up is on its way already
                    signal(wake)
                if stop.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - raised in the stream instead
            error = e
        with lock:
            outcome.append(error)
        signal(wake)
        signal(finished)

    threading.Thread(target=make, name="cllm-generate", daemon=True).start()
    try:
        while True:
            await wake.wait()
            wake.clear()
            with lock:
                chunk, done = "".join(ready), bool(outcome)
                ready.clear()
            if chunk:
                yield chunk
            if done:
                if outcome[0] is not None:
                    raise outcome[0]
                return
            with contextlib.suppress(TimeoutError):  # pieces gather, unless that was all
                await asyncio.wait_for(finished.wait(), GATHER_S)
    finally:
        stop.set()


class Slots:
    """Who is generating right now: one text at a time per client, `limit` in all."""

    def __init__(self, limit: int):
        self.limit = limit
        self.clients: set[str] = set()
        self.clients_lock = threading.Lock()

    def claim(self, client: str) -> tuple[int, str] | None:
        """Take a generation slot for the client, or say why not (HTTP status, message)."""
        with self.clients_lock:
            if client in self.clients:
                return 429, ("this client is already generating: wait for that text to "
                             "finish, or stop it")
            if len(self.clients) >= self.limit:
                return 503, (f"{self.limit} texts are being generated already (setting "
                             "max_generations): try again in a moment")
            self.clients.add(client)
            return None

    def release(self, client: str) -> None:
        with self.clients_lock:
            self.clients.discard(client)


class Generator(Slots):
    """The LLM tab's generation: the versions loaded (the last few), and the slots."""

    def __init__(self, pipeline, limit: int):
        super().__init__(limit)
        self.pipeline = pipeline
        self.models: OrderedDict[str, Model] = OrderedDict()
        self.load_lock = threading.Lock()

    def model(self, version) -> Model:
        with self.load_lock:
            if version.version not in self.models:
                self.models[version.version] = load_model(self.pipeline.pull(version.ref))
                while len(self.models) > MODELS_KEPT:
                    self.models.popitem(last=False)
            self.models.move_to_end(version.version)
            return self.models[version.version]

    def stream(self, model: Model, request: GenerateRequest, text: str) -> Iterator[str]:
        pieces = generate_text(model, text, request.sampling())
        # in a chat the model would go on to write the user's next turn too
        return until(pieces, f"\n{CHAT_TURN['user']}:") if request.mode == "chat" else pieces
