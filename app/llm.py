"""Generation for the LLM tab: a registered version chosen by alias or number, the limits on
every input, one generation per client at a time, and the text streamed as it is produced."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
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


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class GenerateRequest(BaseModel):
    model: str = "@champion"
    mode: Literal["generate", "chat"] = "generate"
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)  # generate: the text to continue
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)  # chat
    max_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.8, ge=0, le=5)
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @field_validator("model")
    @classmethod
    def _model_choice(cls, value: str) -> str:
        if not MODEL_CHOICE.fullmatch(value):
            raise PydanticCustomError("model_choice", "must be an alias such as @champion, a "
                                      "version number, or latest")
        return value

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_k=self.top_k, top_p=self.top_p, seed=self.seed)

    def text(self) -> str:
        """What the model continues: the prompt, or the chat as a transcript ending with the
        assistant's turn. Raises ValueError when it is over the limit."""
        if self.mode == "generate":
            return self.prompt
        if not self.messages or self.messages[-1].role != "user":
            raise ValueError("a chat must end with a user message")
        text = "".join(f"{CHAT_TURN[m.role]}: {m.content.strip()}\n" for m in self.messages)
        text += f"{CHAT_TURN['assistant']}:"
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the conversation is {len(text)} characters, more than "
                             f"{MAX_PROMPT_CHARS}: start a new chat")
        return text


def until(pieces: Iterator[str], stop: str) -> Iterator[str]:
    """The pieces up to the first `stop` (excluded), holding back only a tail that could be
    the start of it, so the text still streams."""
    held = ""
    for piece in pieces:
        held += piece
        cut = held.find(stop)
        if cut >= 0:
            if cut:
                yield held[:cut]
            return
        keep = next((k for k in range(min(len(stop) - 1, len(held)), 0, -1)
                     if stop.startswith(held[-k:])), 0)
        if len(held) > keep:
            yield held[: len(held) - keep]
            held = held[len(held) - keep :]
    if held:
        yield held


class Generator:
    """Loaded versions (the last few) and who is generating right now: one text at a time
    per client, at most `limit` at a time in all."""

    def __init__(self, pipeline, limit: int):
        self.pipeline, self.limit = pipeline, limit
        self.models: OrderedDict[str, Model] = OrderedDict()
        self.load_lock = threading.Lock()
        self.clients: set[str] = set()
        self.clients_lock = threading.Lock()

    def model(self, version) -> Model:
        with self.load_lock:
            if version.version not in self.models:
                self.models[version.version] = load_model(self.pipeline.pull(version.ref))
                while len(self.models) > MODELS_KEPT:
                    self.models.popitem(last=False)
            self.models.move_to_end(version.version)
            return self.models[version.version]

    def claim(self, client: str) -> tuple[int, str] | None:
        """Take a generation slot for the client, or say why not (HTTP status, message)."""
        with self.clients_lock:
            if client in self.clients:
                return 429, ("this client is already generating: wait for that text to "
                             "finish, or stop it")
            if len(self.clients) >= self.limit:
                return 503, (f"{self.limit} texts are being generated already (ui setting "
                             "max_generations): try again in a moment")
            self.clients.add(client)
            return None

    def release(self, client: str) -> None:
        with self.clients_lock:
            self.clients.discard(client)

    def stream(self, model: Model, request: GenerateRequest, text: str) -> Iterator[str]:
        pieces = generate_text(model, text, request.sampling())
        # in a chat the model would go on to write the user's next turn too
        return until(pieces, f"\n{CHAT_TURN['user']}:") if request.mode == "chat" else pieces
