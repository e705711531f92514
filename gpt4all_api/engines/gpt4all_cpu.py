"""The CPU engine: a GGUF model run in-process by the gpt4all bindings.

The model is loaded once (in the lifespan) and every call into it runs on its own
``ModelWorker`` thread. Generation goes through ``llmodel_prompt`` directly so that we can
count prompt tokens (the prompt callback fires once per token), count every generated
token (the bindings' decoder hides tokens that end mid-UTF-8 sequence), parse special
tokens in chat prompts, and stop at once when the client goes away (callback -> False).
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from gpt4all_api.engines.base import (
    Capabilities,
    Done,
    Event,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Token,
)
from gpt4all_api.engines.local import LocalEngine, ModelLoadError, check_loaded
from gpt4all_api.engines.worker import Job
from gpt4all_api.errors import ContextLengthExceeded, InvalidRequest
from gpt4all_api.model_store.gguf import GGUFSummary, probe_gguf
from gpt4all_api.services.chat_template import ChatTemplate, chat_template_from_metadata
from gpt4all_api.services.tools.render import render_chat_prompt

logger = logging.getLogger(__name__)

#: Margin llama.cpp in gpt4all keeps free: prompts longer than n_ctx - 4 are refused.
CONTEXT_MARGIN = 4


class _End:
    """Sentinel closing a generation's event queue."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _load_gpt4all(path: Path, n_ctx: int, n_threads: int | None, allow_download: bool) -> Any:
    from gpt4all import GPT4All

    try:
        model = GPT4All(
            path.name,
            model_path=str(path.parent),
            allow_download=allow_download,
            device="cpu",
            n_ctx=n_ctx,
            verbose=False,
        )
    except Exception as exc:  # bindings raise RuntimeError/ValueError/FileNotFoundError
        raise ModelLoadError(f"cannot load {path.name}: {exc}") from exc
    check_loaded(model, model.model.model, path.name)
    if n_threads is not None:
        model.model.set_thread_count(n_threads)
    return model


class Gpt4AllEngine(LocalEngine):
    """A chat/completion model served from a local GGUF file."""

    capabilities = Capabilities.for_kind(embedding=False)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int | None,
        allow_download: bool = False,
    ) -> None:
        super().__init__(model_id, path)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.allow_download = allow_download
        self.context_length = n_ctx
        self.metadata: GGUFSummary | None = None
        self.template: ChatTemplate | None = None

    async def start(self) -> None:
        def load(_: Job) -> tuple[Any, GGUFSummary | None]:
            meta = probe_gguf(self.path) if self.path.exists() else None
            model = _load_gpt4all(self.path, self.n_ctx, self.n_threads, self.allow_download)
            if meta is None and self.path.exists():
                meta = probe_gguf(self.path)
            return model, meta

        self._model, self.metadata = await self._start_worker(load)
        meta = self.metadata
        self.template = chat_template_from_metadata(
            meta.chat_template if meta else None,
            meta.bos_token if meta else "",
            meta.eos_token if meta else "",
        )
        if self.template.is_fallback:
            logger.info("%s has no usable chat template; chat uses ChatML", self.model_id)
        logger.info("loaded %s in %.2fs (n_ctx=%d)", self.model_id, self.load_seconds, self.n_ctx)

    async def info(self) -> ModelInfo:
        created = int(self.path.stat().st_mtime) if self.path.exists() else 0
        meta = self.metadata
        return ModelInfo(
            id=self.model_id,
            created=created,
            extra={
                "capabilities": self.capabilities.names(),
                "context_length": self.n_ctx,
                "architecture": meta.architecture if meta else None,
                "size_bytes": meta.file_size if meta else None,
                "loaded": self.loaded,
            },
        )

    # --- generation ---------------------------------------------------------------------

    def _prompt_text(self, request: GenerationRequest) -> tuple[str, bool]:
        """The text to feed the model and whether special tokens are parsed in it."""
        if request.response_format is not None:
            kind = request.response_format.get("type")
            raise InvalidRequest(
                f"'response_format' '{kind}' is not supported in CPU mode: the gpt4all backend "
                "cannot constrain sampling to JSON (GPU mode with TGI can).",
                param="response_format",
            )
        if request.messages is not None:
            assert self.template is not None
            return render_chat_prompt(self.template, request), True
        assert request.prompt is not None
        if request.prompt == "":
            # An empty prompt is zero tokens for models that add no BOS, and sampling with
            # no logits aborts the process: start from the BOS (or EOS) token instead, as
            # OpenAI starts from <|endoftext|>.
            meta = self.metadata
            start = (meta.bos_token or meta.eos_token) if meta else ""
            if not start:
                raise InvalidRequest("'prompt' must not be empty for this model.", param="prompt")
            return start, True
        return request.prompt, False

    def implicit_stops(self, request: GenerationRequest) -> tuple[str, ...]:
        """End-of-turn markers that end a chat reply even when they are not the EOS token."""
        if request.messages is not None and self.template is not None:
            return self.template.end_of_turn
        return ()

    async def check_prompt_fits(self, request: GenerationRequest) -> None:
        """Probe: tokenize and stop at the first prompt token (evaluating one token)."""
        text, special = self._prompt_text(request)
        too_long = await self.worker.run(lambda job: self._probe(job, text, special))
        if too_long:
            raise self._context_error(request)

    def _probe(self, job: Job, text: str, special: bool) -> bool:

        too_long = False

        def on_prompt(_: int) -> bool:
            return False

        def on_response(token_id: int, _: bytes) -> bool:
            nonlocal too_long
            too_long = token_id == -1
            return False

        lm = self._model.model
        lm._set_context(n_predict=0, n_batch=1, reset_context=True)
        _prompt(lm, text, special, on_prompt, on_response)
        return too_long

    def _context_error(self, request: GenerationRequest) -> ContextLengthExceeded:
        param = "messages" if request.messages is not None else "prompt"
        return ContextLengthExceeded(
            f"This model's maximum context length is {self.n_ctx} tokens "
            f"(at most {self.n_ctx - CONTEXT_MARGIN} of them for the prompt), but your "
            f"{param} is longer. Please shorten your {param}.",
            param=param,
        )

    async def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        if self._model is None:
            raise InvalidRequest(f"Model {self.model_id} is not loaded.", param="model")
        text, special = self._prompt_text(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | _End] = asyncio.Queue()

        def emit(item: Event | _End) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def run(job: Job) -> None:
            try:
                self._generate(job, text, special, request, emit, stop or threading.Event())
            except BaseException as exc:
                emit(_End(exc))
            else:
                emit(_End())

        job = self.worker.submit(run)
        try:
            while True:
                item = await events.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        if isinstance(item.error, _PromptTooLong):
                            raise self._context_error(request)
                        raise item.error
                    return
                yield item
        finally:
            job.cancel()

    def _generate(
        self,
        job: Job,
        text: str,
        special: bool,
        request: GenerationRequest,
        emit: Any,
        stop: threading.Event,
    ) -> None:
        """Runs on the worker thread: one generation, events pushed to the event loop."""

        p = request.params
        limit = p.max_tokens
        n_predict = limit if limit is not None else self.n_ctx
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        prompt_tokens = 0
        generated = 0
        finish: FinishReason = "stop"
        overflow = False

        def on_prompt(_: int) -> bool:
            nonlocal prompt_tokens
            prompt_tokens += 1
            return not job.cancelled.is_set()

        def on_response(token_id: int, piece: bytes) -> bool:
            nonlocal generated, finish, overflow
            if token_id == -1:
                overflow = True
                return False
            if job.cancelled.is_set() or stop.is_set():
                return False
            generated += 1
            emit(Token(decoder.decode(piece)))
            if generated >= n_predict:
                finish = "length"
            elif limit is None and prompt_tokens + generated >= self.n_ctx:
                finish = "length"  # context full: OpenAI's "length" when max_tokens is unset
                return False
            return not stop.is_set()

        lm = self._model.model
        lm._set_context(
            n_predict=n_predict,
            top_k=p.top_k if p.top_k > 0 else 0,
            top_p=p.top_p,
            min_p=p.min_p,
            temp=p.temperature,
            n_batch=self.n_batch,
            repeat_penalty=p.repeat_penalty,
            repeat_last_n=p.repeat_last_n,
            context_erase=0.75,
            reset_context=True,
        )
        _prompt(lm, text, special, on_prompt, on_response)
        if overflow:
            raise _PromptTooLong()
        tail = decoder.decode(b"", final=True)
        if tail and not job.cancelled.is_set():
            emit(Token(tail, tokens=0))
        if n_predict == 0:
            finish = "length"
        emit(Done(finish, prompt_tokens, generated))


def _prompt(
    lm: Any,
    text: str,
    special: bool,
    on_prompt: Callable[[int], bool],
    on_response: Callable[[int, bytes], bool],
) -> None:
    """One ``llmodel_prompt`` call with raw callbacks: ``on_prompt`` fires per prompt token,
    ``on_response`` per generated token with its raw bytes (the bindings' own decoder hides
    tokens that end inside a UTF-8 sequence, which would break the token count)."""
    from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

    llmodel.llmodel_prompt(
        lm.model,
        text.encode(),
        b"%1",  # the whole prompt is already rendered; no gpt4all template around it
        PromptCallback(on_prompt),
        ResponseCallback(on_response),
        True,  # allow context shifting past n_ctx
        lm.context,
        special,
        ctypes.c_char_p(),
    )


class _PromptTooLong(Exception):
    pass
