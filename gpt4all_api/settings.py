"""Service configuration: one validated ``Settings`` object read from the environment and ``.env``.

Every field is documented here and in README.md; invalid values stop the server at start-up
with a message naming the variable, instead of failing on the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpt4all_api.models import (
    DEFAULT_CHAT_MODEL_FILE,
    DEFAULT_EMBEDDING_MODEL_FILE,
    PACKAGE_MODELS_DIR,
)


class Settings(BaseSettings):
    """All settings, from environment variables (case-insensitive) or ``.env``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- serving ---------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Interface to listen on.")
    port: int = Field(4891, ge=1, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    reload: bool = Field(
        False, description="Development only: uvicorn reloads on changes to the package."
    )

    # --- models ----------------------------------------------------------------------------
    inference_mode: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: gpt4all in-process; gpu: proxy to text-generation-inference."
    )
    model: str = Field(
        DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf"),
        min_length=1,
        description="Chat/completion model served (file name in MODELS_DIR with or without "
        ".gguf, or a gpt4all catalog name when ALLOW_DOWNLOAD is on).",
    )
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL_FILE.removesuffix(".gguf"),
        description="Embedding model for /v1/embeddings (empty string disables the route).",
    )
    models_dir: Path = Field(PACKAGE_MODELS_DIR, description="Directory holding GGUF files.")
    allow_download: bool = Field(
        False, description="Download MODEL from the gpt4all catalog when it is not on disk."
    )
    n_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads per model (unset: gpt4all's default)."
    )
    n_ctx: int = Field(2048, ge=64, le=131072, description="Context window in tokens.")
    n_batch: int = Field(128, ge=1, le=4096, description="Prompt tokens evaluated per batch.")
    max_loaded_models: int = Field(
        2, ge=1, le=64, description="Models kept in memory at once (LRU, idle models unloaded)."
    )

    # --- sampling defaults (a request's own values win) ------------------------------------
    default_temperature: float = Field(1.0, ge=0.0, le=2.0)
    default_top_p: float = Field(1.0, ge=0.0, le=1.0)
    default_top_k: int = Field(40, ge=0, le=100000)
    default_min_p: float = Field(0.0, ge=0.0, le=1.0)
    default_repeat_penalty: float = Field(1.0, ge=0.0, le=10.0)
    default_repeat_last_n: int = Field(64, ge=0, le=100000)

    # --- request limits ----------------------------------------------------------------------
    max_tokens_limit: int = Field(
        4096, ge=1, description="Largest max_tokens / max_completion_tokens a request may ask."
    )
    max_n: int = Field(8, ge=1, le=128, description="Largest n a request may ask.")
    max_prompts: int = Field(32, ge=1, description="Most prompts in one /v1/completions list.")

    @field_validator("model", "embedding_model")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _check_models_dir(self) -> Settings:
        if self.models_dir.exists() and not self.models_dir.is_dir():
            raise ValueError(f"MODELS_DIR {self.models_dir} exists and is not a directory")
        return self
