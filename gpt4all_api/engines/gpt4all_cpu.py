"""The CPU engine: a GGUF model run in-process by the gpt4all bindings.

The model is loaded once (in the lifespan) as PARALLEL instances (``cpu_slots.Slot``),
each with its own context and ``ModelWorker`` thread. Generation goes through
``llmodel_prompt`` directly so that we can count every token, evaluate a prompt in
segments (``_chat_calls``: template markup with special tokens parsed, a content that could
forge a control token as plain text), continue from what the context already holds
(``prompt_cache``, ``state_cache``), and stop at once when the client goes away (callback
-> False).

One request on a slot: cut the slot's cache back to the longest reusable boundary, set
``n_past`` there, evaluate the remaining segments one call each (``n_predict`` 0, no
context shift: a prompt that does not fit is refused, never shifted), then generate with
an empty prompt (sampling from the logits of the last evaluated token). Each completed
segment and each generated token becomes a boundary. The cache is cleared when the
context shifted or the call failed, and forgets what a cancelled segment left behind.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gpt4all_api import request_context
from gpt4all_api.engines.base import (
    Capabilities,
    ChatTurn,
    Done,
    Event,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Token,
)
from gpt4all_api.engines.cpu_slots import (
    CacheStats,
    CpuServing,
    Slot,
    SlotPool,
    StructuredStats,
    default_threads,
)
from gpt4all_api.engines.kv_tiers import KvTiers
from gpt4all_api.engines.llmodel_calls import ContextTokens, prompt_call
from gpt4all_api.engines.local import LocalEngine, ModelLoadError, check_loaded
from gpt4all_api.engines.prompt_cache import (
    MARKUP_MARK,
    Boundary,
    Segment,
    prompt_key,
    segment_starts,
)
from gpt4all_api.engines.state_cache import (
    MIN_SAVE_TOKENS,
    SavedContext,
    StateScratch,
    StateStore,
    restore,
    save,
    token_room,
)
from gpt4all_api.engines.worker import Job
from gpt4all_api.errors import ContextLengthExceeded, InvalidRequest
from gpt4all_api.model_store.gguf import GGUFSummary, probe_gguf
from gpt4all_api.services.chat_template import ChatTemplate, chat_template_from_metadata
from gpt4all_api.services.tools.render import call_markup, chat_prompt_input
from gpt4all_api.structured import (
    Node,
    OutputConstraint,
    StructuredDecoder,
    ToolCallOutput,
    tool_call_grammar,
)
from gpt4all_api.structured.decode import Cancelled, NoRoom
from gpt4all_api.structured.grammar import Alt

logger = logging.getLogger(__name__)

#: Margin llama.cpp in gpt4all keeps free: prompts longer than n_ctx - 4 are refused.
CONTEXT_MARGIN = 4


class _End:
    """Sentinel closing a generation's event queue."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Evaluated:
    """The prompt is evaluated: its token count, for the request's log line."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens


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
    """A chat/completion model served from a local GGUF file by ``parallel`` instances."""

    capabilities = Capabilities.for_kind(embedding=False)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int | None,
        serving: CpuServing,
        allow_download: bool = False,
    ) -> None:
        super().__init__(model_id, path)
        self.serving = serving
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.allow_download = allow_download
        self.context_length = n_ctx
        self.max_concurrency = serving.parallel
        self.metadata: GGUFSummary | None = None
        self.template: ChatTemplate | None = None
        self.stats = CacheStats()
        self.structured = StructuredStats()
        self.store = (
            StateStore(serving.state_cache_mb * 1024 * 1024)
            if serving.prompt_cache and serving.state_cache_mb > 0
            else None
        )
        self.tiers: KvTiers | None = None  # saved contexts on disk and in Redis (kv_tiers)
        self._slots: list[Slot] = []
        self._pool: SlotPool | None = None

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        def load_first(_: Job) -> tuple[Any, GGUFSummary | None]:
            meta = probe_gguf(self.path) if self.path.exists() else None
            model = _load_gpt4all(self.path, self.n_ctx, self.n_threads, self.allow_download)
            if meta is None and self.path.exists():
                meta = probe_gguf(self.path)
            return model, meta

        def load_more(_: Job) -> Any:
            return _load_gpt4all(self.path, self.n_ctx, self.n_threads, False)

        slots: list[Slot] = []
        try:
            for i in range(self.serving.parallel):
                slot = Slot(i, self.model_id)
                slots.append(slot)
                if i == 0:  # the first load is the one timed (/metrics' load seconds)
                    started = time.perf_counter()
                    slot.model, self.metadata = await slot.worker.run(load_first)
                    self.load_seconds = time.perf_counter() - started
                else:
                    slot.model = await slot.worker.run(load_more)
        except BaseException:
            await self._close_slots(slots)
            raise
        self._slots = slots
        self._pool = SlotPool(slots, self.n_threads or default_threads())
        self.tiers = await asyncio.to_thread(
            KvTiers.open, self.serving, self.path, self.n_ctx, self.n_batch
        )
        meta = self.metadata
        self.template = chat_template_from_metadata(
            meta.chat_template if meta else None,
            meta.bos_token if meta else "",
            meta.eos_token if meta else "",
        )
        if self.template.is_fallback:
            logger.info("%s has no usable chat template; chat uses ChatML", self.model_id)
        logger.info(
            "loaded %s in %.2fs (n_ctx=%d, %d slot(s), prompt cache %s)",
            self.model_id,
            self.load_seconds,
            self.n_ctx,
            len(slots),
            ("exact" if self.serving.prompt_cache_exact else "on")
            if self.serving.prompt_cache
            else "off",
        )

    async def close(self) -> None:
        slots, self._slots, self._pool = self._slots, [], None
        await self._close_slots(slots)
        tiers, self.tiers = self.tiers, None
        if tiers is not None:  # after the slots: what they queued is written first
            await asyncio.to_thread(tiers.close)

    @staticmethod
    async def _close_slots(slots: list[Slot]) -> None:
        for slot in slots:
            model, slot.model = slot.model, None

            def unload(_: Job, model: Any = model, slot: Slot = slot) -> None:
                slot.cache.clear()
                if slot.scratch is not None:
                    slot.scratch.close()
                    slot.scratch = None
                if model is not None:
                    model.close()

            try:
                await slot.worker.run(unload)
            finally:
                await asyncio.to_thread(slot.worker.stop)

    @property
    def loaded(self) -> bool:
        return any(s.model is not None for s in self._slots)

    def slots_info(self) -> dict[str, Any]:
        """Slots, their use and prompt reuse (for /health, /v1/models and /metrics)."""
        pool = self._pool
        return {
            "slots": len(self._slots),
            "busy": pool.busy if pool else 0,
            "queue": sum(s.worker.pending for s in self._slots),
            "threads": pool.total_threads if pool else 0,
            "prompt_cache": self.serving.prompt_cache,
            "cache": self.stats.as_dict(),
            "structured": self.structured.as_dict(),
            # (an empty store is falsy: it has a length)
            "saved_contexts": self.store.as_dict() if self.store is not None else None,
            "kv_tiers": self.tiers.as_dict() if self.tiers is not None else None,
        }

    async def health(self) -> dict[str, Any]:
        return {"loaded": self.loaded, **self.slots_info()}

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
                **self.slots_info(),
            },
        )

    # --- prompts --------------------------------------------------------------------------

    def _segments(self, request: GenerationRequest) -> list[Segment]:
        """The prompt as evaluated: chat markup with special tokens parsed, contents and
        completion prompts as plain text (a content cannot forge the template's tokens)."""
        if request.messages is not None:
            assert self.template is not None
            turns, tools = chat_prompt_input(self.template, request)
            return _chat_calls(tuple(turns), self.template.render_segments(turns, tools))
        assert request.prompt is not None
        if request.prompt == "":
            # An empty prompt is zero tokens for models that add no BOS, and sampling with
            # no logits aborts the process: start from the BOS (or EOS) token instead, as
            # OpenAI starts from <|endoftext|>.
            meta = self.metadata
            start = (meta.bos_token or meta.eos_token) if meta else ""
            if not start:
                raise InvalidRequest("'prompt' must not be empty for this model.", param="prompt")
            return [Segment(start.encode(), True)]
        return [Segment(request.prompt.encode(), False)]

    def implicit_stops(self, request: GenerationRequest) -> tuple[str, ...]:
        """End-of-turn markers that end a chat reply even when they are not the EOS token.
        None for a structured reply: the decoder ends it where the grammar does, and a
        string value may hold such a marker's text (written out, never as the token)."""
        if request.messages is not None and self.template is not None:
            return self.template.end_of_turn if request.constraint is None else ()
        return ()

    def _reusable(self, slot: Slot, key: bytes, starts: set[int]) -> int:
        if not self.serving.prompt_cache:
            return 0
        return slot.cache.match(key, starts, self.serving.prompt_cache_exact).n_past

    async def _acquire(self, key: bytes, starts: set[int]) -> Slot:
        if self._pool is None:
            raise InvalidRequest(f"Model {self.model_id} is not loaded.", param="model")
        return await self._pool.acquire(lambda s: self._reusable(s, key, starts))

    def _release_when_done(self, slot: Slot, job: Job) -> None:
        """The slot is free once its job has really ended (a cancelled job may still be
        inside a callback); only then may another request choose it by its cache."""
        pool = self._pool
        job.future.add_done_callback(lambda _: pool.release(slot) if pool else None)

    async def check_prompt_fits(self, request: GenerationRequest) -> None:
        """Probe: tokenize and evaluate one token past the slot's context, then move
        ``n_past`` back, so that the slot's cache survives the probe."""
        segments = self._segments(request)
        data = b"".join(s.data for s in segments)
        special = any(s.special for s in segments)
        slot = await self._acquire(b"", set())
        job = slot.worker.submit(lambda job: self._probe(slot, data, special))
        self._release_when_done(slot, job)
        if await asyncio.shield(job.future):
            raise self._context_error(request)

    def _probe(self, slot: Slot, data: bytes, special: bool) -> bool:
        too_long = False

        def on_prompt(_: int) -> bool:
            return False

        def on_response(token_id: int, _: bytes) -> bool:
            nonlocal too_long
            too_long = token_id == -1
            return False

        lm = slot.model.model
        lm._set_context(n_predict=0, n_batch=1, reset_context=False)
        saved = lm.context.n_past
        slot.apply_threads()
        try:
            prompt_call(lm, data, special, on_prompt, on_response, allow_shift=False)
        except BaseException:
            slot.cache.clear()
            raise
        finally:
            lm.context.n_past = saved
        return too_long

    def _context_error(self, request: GenerationRequest) -> ContextLengthExceeded:
        param = "messages" if request.messages is not None else "prompt"
        return ContextLengthExceeded(
            f"This model's maximum context length is {self.n_ctx} tokens "
            f"(at most {self.n_ctx - CONTEXT_MARGIN} of them for the prompt), but your "
            f"{param} is longer. Please shorten your {param}.",
            param=param,
        )

    # --- generation -----------------------------------------------------------------------

    async def stream(
        self, request: GenerationRequest, stop: threading.Event | None = None
    ) -> AsyncIterator[Event]:
        if not self.loaded:
            raise InvalidRequest(f"Model {self.model_id} is not loaded.", param="model")
        segments = self._segments(request)
        key = prompt_key(segments)
        starts = segment_starts(segments)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | _End | _Evaluated] = asyncio.Queue()
        # Events cross from the worker thread in batches: one loop wake-up (a self-pipe
        # write, and the GIL) for all the tokens made while the loop was busy, not one each.
        outbox: collections.deque[Event | _End | _Evaluated] = collections.deque()
        wake_pending = False

        def drain() -> None:
            nonlocal wake_pending
            wake_pending = False  # before taking: an item added after this wakes us again
            while outbox:
                events.put_nowait(outbox.popleft())

        def emit(item: Event | _End | _Evaluated) -> None:
            nonlocal wake_pending
            outbox.append(item)
            if not wake_pending:
                wake_pending = True
                loop.call_soon_threadsafe(drain)

        slot = await self._acquire(key, starts)

        def run(job: Job) -> None:
            try:
                self._generate(
                    slot, job, segments, key, starts, request, emit, stop or threading.Event()
                )
            except BaseException as exc:
                emit(_End(exc))
            else:
                finished = not job.cancelled.is_set()
                emit(_End())
                if finished:
                    self._publish(slot)

        job = slot.worker.submit(run)
        self._release_when_done(slot, job)
        try:
            while True:
                item = await events.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        if isinstance(item.error, _PromptTooLong):
                            raise self._context_error(request)
                        raise item.error
                    return
                if isinstance(item, _Evaluated):
                    request_context.note_prompt_tokens(item.prompt_tokens)
                    continue
                if isinstance(item, Done):
                    self.stats.note(item.prompt_tokens, item.cached_tokens)
                yield item
        finally:
            job.cancel()

    def _generate(
        self,
        slot: Slot,
        job: Job,
        segments: list[Segment],
        key: bytes,
        starts: set[int],
        request: GenerationRequest,
        emit: Any,
        stop: threading.Event,
    ) -> None:
        """Runs on the slot's worker thread: one generation, events pushed to the loop
        (``key`` and ``starts``: the prompt's cache key and its calls' starts)."""
        lm = slot.model.model
        cache = slot.cache
        caching = self.serving.prompt_cache
        p = request.params
        limit = p.max_tokens
        n_predict = limit if limit is not None else self.n_ctx
        lm._set_context(
            n_predict=0,
            top_k=p.top_k if p.top_k > 0 else 0,
            top_p=p.top_p,
            min_p=p.min_p,
            temp=p.temperature,
            n_batch=self.n_batch,
            # a reply held to a grammar repeats its own markup (quotes, commas, keys):
            # penalising them derails the values the model writes between them
            repeat_penalty=p.repeat_penalty if request.constraint is None else 1.0,
            repeat_last_n=p.repeat_last_n,
            context_erase=0.75,
            reset_context=True,
        )
        start = (
            cache.match(key, starts, self.serving.prompt_cache_exact)
            if caching
            else Boundary(0, 0, True)
        )
        if (self.store is not None or self.tiers is not None) and caching:
            start = self._swap_state(slot, key, starts, start)
            cache = slot.cache
        cache.cut(start)
        lm.context.n_past = start.n_past
        try:
            for data, special, key_part in _rest(segments, start.offset):
                if not self._evaluate(slot, job, data, special):
                    return  # cancelled: the cache keeps the segments evaluated so far
                if caching:
                    cache.add(key_part, lm.context.n_past, exact=True)
            prompt_tokens = lm.context.n_past
            if prompt_tokens > self.n_ctx - CONTEXT_MARGIN:
                raise _PromptTooLong()
            emit(_Evaluated(prompt_tokens))
            if caching and segments[-1].special:
                # a chat reply comes back as the start of a call: markup-parsed when safe
                cache.extend(bytes((MARKUP_MARK,)))
            if request.constraint is not None:
                generated, finish = self._decode(slot, job, request, emit, stop)
            else:
                generated, finish = self._sample(slot, job, request, n_predict, emit, stop)
        except _PromptTooLong:
            raise  # nothing evaluated past the last boundary is kept; the rest is valid
        except BaseException:
            cache.clear()
            raise
        n_past = lm.context.n_past
        if n_past not in (prompt_tokens + generated, prompt_tokens + generated + 1):
            cache.clear()  # the context shifted: token positions no longer match
        if not job.cancelled.is_set():
            emit(Done(finish, prompt_tokens, generated, cached_tokens=start.n_past))

    def _swap_state(self, slot: Slot, key: bytes, starts: set[int], live: Boundary) -> Boundary:
        """Keep the slot's conversation before a request overwrites most of it, and bring
        back a saved one (from RAM, else from disk or the shared tier) that this request
        continues further than the slot does."""
        lm = slot.model.model
        cache = slot.cache
        exact = self.serving.prompt_cache_exact
        if not lm.context.tokens:
            self._prime(slot)
        room = token_room(lm, self.n_ctx)
        found = None
        if self.store is not None:
            found = self.store.take(key, starts, exact, live.n_past + 32, room)
        if self.tiers is not None:
            further = self._fetch(key, starts, found[1] if found else live, room)
            if further is not None:
                if found is not None and self.store is not None:
                    self.store.put(found[0])
                found = further
        lost = cache.n_past - live.n_past
        if self.store is not None and (
            (lost >= MIN_SAVE_TOKENS and lost > live.n_past) or found is not None
        ):
            if slot.scratch is None:
                slot.scratch = StateScratch(lm.model)
            saved = save(lm, slot.scratch, cache)
            if saved is not None:
                self.store.put(saved)
        if found is None:
            return live
        entry, boundary = found
        if not restore(lm, entry, boundary, self.n_ctx):
            if self.store is not None:
                self.store.put(entry)
            return live
        slot.cache = entry.cache
        return boundary

    def _fetch(
        self, key: bytes, starts: set[int], floor: Boundary, room: int
    ) -> tuple[SavedContext, Boundary] | None:
        """A saved context from disk or the shared tier reaching further than ``floor``."""
        assert self.tiers is not None
        saved = self.tiers.fetch(key, starts, floor.offset)
        if saved is None:
            return None
        exact = self.serving.prompt_cache_exact
        boundary = saved.cache.match(key, starts, exact, max_n_past=room)
        return (saved, boundary) if boundary.n_past > floor.n_past + 32 else None

    def _prime(self, slot: Slot) -> None:
        """Evaluate one token in a context that never held any, so that its token vector
        has storage to check (``state_cache.token_room``) before a restore."""
        lm = slot.model.model
        lm.context.n_past = 0
        slot.apply_threads()
        prompt_call(lm, b" ", False, lambda _: True, lambda _t, _p: False, allow_shift=False)

    def _publish(self, slot: Slot) -> None:
        """Worker thread, after the answer is out: hand the slot's context to the disk and
        shared tiers (a copy; the writer thread does the rest)."""
        tiers = self.tiers
        if tiers is None or not self.serving.prompt_cache:
            return
        try:
            hashes = tiers.publishable(slot.cache)
            if not hashes:
                return
            lm = slot.model.model
            if slot.scratch is None:
                slot.scratch = StateScratch(lm.model)
            saved = save(lm, slot.scratch, slot.cache)
            if saved is not None:
                tiers.publish(saved, hashes)
        except Exception:  # the answer was sent: a failed save only costs the tiers an entry
            logger.exception("cannot save the context for the disk and shared tiers")

    def _evaluate(self, slot: Slot, job: Job, data: bytes, special: bool) -> bool:
        """Evaluate one prompt segment at ``n_past``; False when cancelled."""
        try:
            self._context_tokens(slot, job).evaluate(data, special)
        except Cancelled:
            return False
        except NoRoom:  # over the context (no shift): the backend evaluated nothing
            raise _PromptTooLong() from None
        return True

    def _context_tokens(self, slot: Slot, job: Job) -> ContextTokens:
        meta = self.metadata
        return ContextTokens(
            slot.model.model,
            self.n_ctx,
            meta.control_tokens if meta else frozenset(),
            job.cancelled.is_set,
            slot.apply_threads,
        )

    def _sample(
        self,
        slot: Slot,
        job: Job,
        request: GenerationRequest,
        n_predict: int,
        emit: Any,
        stop: threading.Event,
    ) -> tuple[int, FinishReason]:
        """Generate from the logits of the last evaluated prompt token (empty prompt)."""
        lm = slot.model.model
        cache = slot.cache
        caching = self.serving.prompt_cache
        limit = request.params.max_tokens
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        prompt_tokens = lm.context.n_past
        generated = 0
        finish: FinishReason = "stop"

        def on_prompt(_: int) -> bool:
            return True

        def on_response(token_id: int, piece: bytes) -> bool:
            nonlocal generated, finish
            if token_id == -1 or job.cancelled.is_set() or stop.is_set():
                return False
            generated += 1
            if caching:
                cache.add(piece, prompt_tokens + generated, exact=False)
            emit(Token(decoder.decode(piece)))
            slot.apply_threads()
            if generated >= n_predict:
                finish = "length"
            elif limit is None and prompt_tokens + generated >= self.n_ctx:
                finish = "length"  # context full: OpenAI's "length" when max_tokens is unset
                return False
            return not stop.is_set()

        if n_predict == 0:
            return 0, "length"
        lm.context.n_predict = n_predict
        slot.apply_threads()
        prompt_call(lm, b"", False, on_prompt, on_response, allow_shift=True)
        tail = decoder.decode(b"", final=True)
        if tail and not job.cancelled.is_set():
            emit(Token(tail, tokens=0))
        return generated, finish

    def _decode(
        self, slot: Slot, job: Job, request: GenerationRequest, emit: Any, stop: threading.Event
    ) -> tuple[int, FinishReason]:
        """A reply held to ``request.constraint`` (``structured.decode``): the text it
        fixes is evaluated, what the model chooses is sampled and checked."""
        assert request.constraint is not None
        decoder = StructuredDecoder(
            self._grammar(request.constraint),
            self._context_tokens(slot, job),
            max_tokens=request.params.max_tokens,
            emit=lambda text, tokens: emit(Token(text, tokens)),
            interrupted=lambda: job.cancelled.is_set() or stop.is_set(),
            plain_is_safe=_SPECIAL_CHARS.isdisjoint,
        )
        try:
            result = decoder.run()
        except Cancelled:
            return 0, "stop"
        self.structured.note(result)
        return result.completion_tokens, result.finish_reason

    def _grammar(self, constraint: OutputConstraint) -> Node:
        assert self.template is not None
        if isinstance(constraint, ToolCallOutput):
            return tool_call_grammar(call_markup(self.template), constraint.tools)
        if constraint.calls is None:
            return constraint.value
        call = tool_call_grammar(call_markup(self.template), constraint.calls.tools)
        return Alt((call, constraint.value))


#: A content holding none of these characters cannot contain a control token's text
#: (``<|im_end|>``, ``</s>``, ``[INST]``, ``<start_of_turn>``, ``<｜...｜>``): parsing special
#: tokens in it changes nothing, so it may share a call with the markup around it.
_SPECIAL_CHARS = frozenset("<>[]|｜")


def _chat_calls(
    messages: tuple[ChatTurn, ...], parts: list[tuple[str, int | None]]
) -> list[Segment]:
    """The evaluation calls of a chat prompt, cut where later prompts branch off.

    Each call costs a decode per batch, and on a busy machine every decode waits on its
    threads, so the pieces are merged into as few calls as reuse allows: one cut after the
    system message's markup (clients sharing a system prompt), one before each assistant
    reply (a follow-up continues from the previous prompt's end). A content that could hold
    a control token's text gets a call of its own without special parsing.
    """
    calls: list[Segment] = []
    current: list[str] = []
    cut_after_markup = False

    def flush() -> None:
        if current:
            calls.append(Segment("".join(current).encode(), True))
            current.clear()

    for text, index in parts:
        if index is None:
            current.append(text)
            if cut_after_markup:
                flush()
                cut_after_markup = False
            continue
        role = messages[index].role
        if role == "assistant":
            flush()
        if _SPECIAL_CHARS.isdisjoint(text):
            current.append(text)
        else:
            flush()
            calls.append(Segment(text.encode(), False))
        cut_after_markup = role == "system"
    flush()
    return calls


def _rest(segments: list[Segment], offset: int) -> list[tuple[bytes, bool, bytes]]:
    """What remains to evaluate after key ``offset``: (data, special, key bytes) per call;
    a boundary inside a segment (only when exactness is not required) leaves its tail."""
    rest: list[tuple[bytes, bool, bytes]] = []
    pos = 0
    for s in segments:
        end = pos + 1 + len(s.data)
        if offset <= pos:
            rest.append((s.data, s.special, s.key))
        elif offset < end:
            tail = s.data[offset - pos - 1 :]
            rest.append((tail, s.special, tail))
        pos = end
    return rest


class _PromptTooLong(Exception):
    pass
