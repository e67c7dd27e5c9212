"""`[ui]`: how the web application listens (`cllm ui`; flags override), and the whole
configuration of a process that serves it: the pipeline's and this section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import load
from core.errors import UserError
from pipeline.config import Config


@dataclass
class UIConfig:
    host: str = "127.0.0.1"  # an address other than loopback needs a token
    port: int = 8000
    token: str = ""  # when set, every request must carry it (CLLM_UI_TOKEN)

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"ui setting port={self.port} must be between 1 and 65535")


@dataclass
class AppConfig(Config):
    ui: UIConfig = field(default_factory=UIConfig)


def load_app_config(path: str | Path | None = None, environ=None) -> AppConfig:
    return load(AppConfig, path, environ)
