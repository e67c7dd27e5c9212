"""`[ui]`: how the web application listens (`cllm ui`), `[serve]`: how the OpenAI-compatible
server does (`cllm serve`), flags overriding both; and the whole configuration of a process
that serves them: the pipeline's and these sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import load
from core.errors import UserError
from pipeline.config import Config


@dataclass
class UIConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # the secret every request must carry (CLLM_UI_TOKEN); empty: a new one at each start,
    # shown in the URL printed (`cllm ui --no-token` goes without, on loopback only)
    token: str = ""
    max_generations: int = 4  # texts generated at once, all clients together

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"ui setting port={self.port} must be between 1 and 65535")
        if self.max_generations < 1:
            raise UserError(f"ui setting max_generations={self.max_generations} must be at "
                            "least 1")


@dataclass
class ServeConfig(UIConfig):
    port: int = 8001
    model: str = "@champion"  # the version served: an alias (followed as it moves) or a number
    poll: float = 2.0  # seconds between two looks at where the alias points

    def validate(self) -> None:
        super().validate()
        if not self.poll > 0:
            raise UserError(f"serve setting poll={self.poll} must be above 0 seconds")


@dataclass
class AppConfig(Config):
    ui: UIConfig = field(default_factory=UIConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def load_app_config(path: str | Path | None = None, environ=None) -> AppConfig:
    return load(AppConfig, path, environ)
