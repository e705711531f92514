"""Service configuration: one validated ``Settings`` object read from the environment and ``.env``.

Every field is documented here and in README.md; invalid values stop the server at start-up
with a message naming the variable, instead of failing on the first request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gpt4all_api.model_store import (
    DEFAULT_CHAT_MODEL_FILE,
    DEFAULT_EMBEDDING_MODEL_FILE,
    DEFAULT_MODELS_DIR,
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
        description="Embedding model loaded at start-up for /v1/embeddings (requests may "
        "name any embedding GGUF in MODELS_DIR; empty: none loaded at start-up).",
    )
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Directory holding GGUF files.")
    builtin_models_dir: Path | None = Field(
        None,
        description="Second, read-only directory searched for MODEL after MODELS_DIR (the "
        "Docker image keeps its baked-in default models there; unset: none).",
    )
    allow_download: bool = Field(
        False,
        description="Download models missing from MODELS_DIR from the gpt4all catalog "
        "(CATALOG_URL): MODEL and EMBEDDING_MODEL at start-up, and any catalog model a "
        "request names.",
    )
    n_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads per model (unset: gpt4all's default)."
    )
    n_ctx: int = Field(2048, ge=64, le=131072, description="Context window in tokens.")
    n_batch: int = Field(128, ge=1, le=4096, description="Prompt tokens evaluated per batch.")
    parallel: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Instances (slots) of the chat model serving requests at once, each with "
        "its own context; they share the mapped weights and split N_THREADS between the "
        "running ones (unset: one per core, at most 4).",
    )
    prompt_cache: bool = Field(
        True,
        description="Reuse what a model context already evaluated when a prompt starts "
        "with the same text (a conversation's history, a shared system prompt).",
    )
    prompt_cache_exact: bool = Field(
        True,
        description="Reuse only at message boundaries, where the context ends up exactly "
        "as in a fresh evaluation; false also reuses generated replies and extended "
        "completion prompts (faster follow-ups, tokens may differ slightly).",
    )
    state_cache_mb: int = Field(
        256,
        ge=0,
        le=1_048_576,
        description="RAM (MB) for saved contexts of recent conversations beyond the live "
        "slots (LRU; 0: none).",
    )
    max_loaded_models: int = Field(
        2, ge=1, le=64, description="Models kept in memory at once (LRU, idle models unloaded)."
    )
    kv_disk_mb: int = Field(
        1024,
        ge=0,
        le=16_777_216,
        description="Disk (MB) under DATA_DIR/kv for saved contexts of conversations, so a "
        "follow-up after a restart continues its conversation (LRU; 0: none).",
    )
    kv_cache_url: SecretStr | None = Field(
        None,
        description="Redis or Valkey shared by the replicas for saved contexts, so any replica "
        "continues any conversation: redis://[:password@]host:6379/0, rediss://... or "
        "unix:///path. Bound its memory on the server side (maxmemory, allkeys-lru). Unset: "
        "none. Never logged.",
    )
    kv_cache_ttl: int = Field(
        86400,
        ge=0,
        le=31_536_000,
        description="Seconds a saved context stays in KV_CACHE_URL after it was written "
        "(0: until Redis evicts it).",
    )
    structured_max_items: int = Field(
        32,
        ge=1,
        le=10000,
        description="Structured output on CPU: items of an array without maxItems (and "
        "members of a free-form object) after which the decoder closes it; small models "
        "rarely close lists by themselves.",
    )

    # --- model management ------------------------------------------------------------------
    catalog_url: str = Field(
        "https://gpt4all.io/models/models3.json",
        min_length=1,
        description="gpt4all model catalog (models3.json) used by ALLOW_DOWNLOAD and "
        "`python -m gpt4all_api models pull`: an http(s):// or file:// URL (a mirror).",
    )
    catalog_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds to wait for the catalog (and download I/O)."
    )
    model_wait_timeout: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds a request for a model that is not loaded waits for a free slot "
        "when all MAX_LOADED_MODELS are busy; then 503 with Retry-After.",
    )
    max_embedding_inputs: int = Field(
        2048, ge=1, le=100000, description="Most inputs in one /v1/embeddings request."
    )
    embedding_n_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="CPU threads per embedding model. 1 is the fastest for small BERT models "
        "on small machines (measured on a busy 2-core VM: 2 ms per short text with 1 thread, "
        "0.5 s with 2).",
    )

    @field_validator("catalog_url")
    @classmethod
    def _check_catalog_url(cls, v: str) -> str:
        v = v.strip()
        if urlsplit(v).scheme not in ("http", "https", "file"):
            raise ValueError("CATALOG_URL must be an http://, https:// or file:// URL")
        return v

    # --- sampling defaults (a request's own values win) ------------------------------------
    default_temperature: float = Field(1.0, ge=0.0, le=2.0)
    default_top_p: float = Field(1.0, ge=0.0, le=1.0)
    default_top_k: int = Field(40, ge=0, le=100000)
    default_min_p: float = Field(0.0, ge=0.0, le=1.0)
    default_repeat_penalty: float = Field(1.18, ge=0.0, le=10.0)
    default_repeat_last_n: int = Field(64, ge=0, le=100000)

    # --- request limits ----------------------------------------------------------------------
    max_tokens_limit: int = Field(
        4096, ge=1, description="Largest max_tokens / max_completion_tokens a request may ask."
    )
    max_n: int = Field(8, ge=1, le=128, description="Largest n a request may ask.")
    max_prompts: int = Field(32, ge=1, description="Most prompts in one /v1/completions list.")

    # --- stored responses (/v1/responses) -------------------------------------------------
    data_dir: Path = Field(
        Path("data"),
        description="Directory for the service's own data: the SQLite database of stored "
        "responses lives here unless DATABASE_URL is set (created on demand).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="Database of stored responses: postgresql://user:password@host:5432/db "
        "for one database shared by several API replicas, or sqlite:///path/file.sqlite3. "
        "Unset: SQLite at DATA_DIR/responses.sqlite3. Never logged.",
    )
    responses_max_count: int = Field(
        100000,
        ge=0,
        description="Most stored responses kept; beyond it the least recently continued "
        "conversations are removed first, newest response first (0: no limit).",
    )
    responses_max_age_days: float = Field(
        30.0,
        ge=0,
        le=36500,
        description="Days a stored response is kept after its conversation was last "
        "continued (0: kept until deleted or pushed out by RESPONSES_MAX_COUNT).",
    )

    response_store_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds one operation of the response store may take (waiting for a "
        "connection included); then the request fails with 503 response_store_unavailable "
        "(a stream with its error event). Bounds a hung or unreachable database.",
    )

    @field_validator("database_url", "kv_cache_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        url = v.get_secret_value().strip()
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("sqlite", "postgres", "postgresql", "postgresql+psycopg"):
            # The URL may hold a password: name the scheme only.
            raise ValueError(
                "DATABASE_URL must be a postgresql://... or sqlite:///... URL "
                f"(scheme {scheme or 'missing'!r} is not supported)"
            )
        return SecretStr(url)

    @field_validator("kv_cache_url")
    @classmethod
    def _check_kv_cache_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        url = v.get_secret_value().strip()
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            # The URL may hold a password: name the scheme only.
            raise ValueError(
                "KV_CACHE_URL must be a redis://, rediss:// or unix:// URL "
                f"(scheme {parts.scheme or 'missing'!r} is not supported)"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("KV_CACHE_URL must name a host, e.g. redis://redis:6379/0")
        return SecretStr(url)

    # --- gpu mode (INFERENCE_MODE=gpu: proxy to an inference server) ------------------------
    gpu_url: str | None = Field(
        None,
        description="Base URL of the upstream (required in gpu mode), e.g. http://tgi:80 for "
        "text-generation-inference or http://vllm:8000/v1 for an OpenAI-compatible server.",
    )
    gpu_backend: Literal["tgi", "openai"] = Field(
        "tgi",
        description="tgi: HuggingFace text-generation-inference; openai: any "
        "OpenAI-compatible server (vLLM, llama.cpp's server, another gpt4all-api, ...).",
    )
    gpu_model_id: str | None = Field(
        None,
        description="Model id reported to clients (unset: the upstream's own id). When set, "
        "the service starts even while the upstream is still down.",
    )
    gpu_api_key: SecretStr | None = Field(
        None,
        description="Bearer token sent to the upstream (vLLM's --api-key, a hosted endpoint, "
        "an authenticating proxy in front of TGI); never logged.",
    )
    gpu_connect_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds to open a connection to the upstream."
    )
    gpu_read_timeout: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Seconds to wait for the upstream's next bytes (the first token included).",
    )
    gpu_max_connections: int = Field(
        64, ge=1, le=4096, description="Most requests running upstream at once (then queued)."
    )
    gpu_startup_timeout: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Seconds start-up waits for the upstream's model info when GPU_MODEL_ID "
        "is unset (with GPU_MODEL_ID set it does not wait).",
    )

    # --- hardening: access control, limits, overload, observability, shutdown ----------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys accepted as `Authorization: Bearer <key>` (comma-separated or a "
        "JSON list). Empty, with no API_KEYS_FILE: no authentication. Never logged.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with more API keys, one per line ('#' starts a comment)."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed by CORS (comma-separated or a JSON list; '*' for "
        "any). Empty: CORS headers are never sent.",
    )
    cors_allow_credentials: bool = Field(
        False, description="Let browsers send cookies / credentials cross-origin (CORS)."
    )
    max_queue: int = Field(
        16,
        ge=0,
        le=100000,
        description="Requests that may wait per model while it is busy; more get 429 at once.",
    )
    queue_timeout: float = Field(
        120.0,
        ge=0,
        le=86400,
        description="Seconds a request may wait in the queue before it fails with 503 "
        "queue_timeout (0: no limit).",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body in bytes (more: 413)."
    )
    request_read_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's headers (from its first byte), "
        "and again its body; then 408 request_timeout and the connection is closed.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most open client connections; a request on one beyond them is answered "
        "503 too_many_connections and its connection closed. Keep it below the process's "
        "open-file limit (ulimit -n).",
    )
    max_stop_length: int = Field(
        256, ge=1, le=4096, description="Longest stop sequence, in characters."
    )
    graceful_shutdown_seconds: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="On SIGTERM: seconds in-flight requests get to finish before the rest are "
        "cancelled (streams end with an error event, then [DONE]).",
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    metrics_public: bool = Field(
        False, description="Serve /metrics without an API key even when API keys are set."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line."
    )

    _file_api_keys: list[SecretStr] = PrivateAttr(default_factory=list)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        """Environment lists: a JSON list, or comma-separated values; blanks dropped."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    v = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a valid JSON list: {exc.msg}") from None
            else:
                v = text.split(",")
        if isinstance(v, list | tuple):
            out = []
            for item in v:
                raw = item.get_secret_value() if isinstance(item, SecretStr) else item
                if not isinstance(raw, str):
                    raise ValueError("must be a list of strings")
                if raw.strip():
                    out.append(raw.strip())
            return out
        return v

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _read_api_keys_file(self) -> Settings:
        if self.api_keys_file is None:
            return self
        try:
            text = self.api_keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"API_KEYS_FILE {self.api_keys_file} cannot be read: {exc}") from None
        keys = [line.strip() for line in text.splitlines()]
        self._file_api_keys = [SecretStr(k) for k in keys if k and not k.startswith("#")]
        if not self._file_api_keys:
            raise ValueError(f"API_KEYS_FILE {self.api_keys_file} holds no keys")
        return self

    def all_api_keys(self) -> list[SecretStr]:
        """API_KEYS plus the keys read from API_KEYS_FILE (empty: no authentication)."""
        return [*self.api_keys, *self._file_api_keys]

    @field_validator("builtin_models_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("model", "embedding_model")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _check_models_dir(self) -> Settings:
        if self.models_dir.exists() and not self.models_dir.is_dir():
            raise ValueError(f"MODELS_DIR {self.models_dir} exists and is not a directory")
        return self

    @field_validator("gpu_url", "gpu_model_id", "gpu_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("gpu_url")
    @classmethod
    def _check_gpu_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        url = v.strip().rstrip("/")
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"GPU_URL must be an http:// or https:// URL with a host, not {v!r}")
        if parsed.query or parsed.fragment:
            raise ValueError("GPU_URL must not have a query or fragment")
        return url

    @model_validator(mode="after")
    def _check_gpu_mode(self) -> Settings:
        if self.inference_mode == "gpu" and self.gpu_url is None:
            raise ValueError(
                "GPU_URL is required when INFERENCE_MODE=gpu (e.g. http://tgi:80 for "
                "text-generation-inference)"
            )
        if self.gpu_model_id is not None:
            self.gpu_model_id = self.gpu_model_id.strip()
        return self
