"""The model registry in-process with real tiny GGUF models: on-demand loading, LRU, leases
(built from settings as the app builds it: ``wiring.build_services``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from gpt4all_api.engines.base import Capabilities, Capability, Engine, ModelInfo
from gpt4all_api.errors import APIError, InvalidRequest, ModelNotFound, ServiceUnavailable
from gpt4all_api.model_store import DEFAULT_EMBEDDING_MODEL_FILE
from gpt4all_api.registry import ModelLoadFailed
from gpt4all_api.services.generation.streaming import GenerationStream
from gpt4all_api.settings import Settings
from gpt4all_api.startup import load_configured_models
from gpt4all_api.wiring import AppServices, build_services
from tests.support.gguf_tools import drop_tensor
from tests.support.tinymodel import build_broken_models, build_tiny_model

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    for name in MODELS:
        build_tiny_model(d / f"{name}.gguf", sentence=f"I am {name}.")
    build_broken_models(d)
    drop_tensor(d / "alpha.gguf", d / "missing-tensor.gguf", "output_norm.weight")
    return d


def make_manager(models_dir: Path, **overrides: Any) -> AppServices:
    values: dict[str, Any] = {
        "models_dir": models_dir,
        "model": "alpha",
        "embedding_model": "",
        "max_loaded_models": 2,
        "n_threads": 1,
        "n_ctx": 256,
        "model_wait_timeout": 5.0,
        "data_dir": models_dir / "data",  # the response store, beside the test's models
        **overrides,
    }
    return build_services(Settings(_env_file=None, **values))  # type: ignore[call-arg]


def loaded(manager: AppServices) -> list[str]:
    return sorted(manager.registry.engines)


async def hold(manager: AppServices, name: str, seconds: float, cap: Capability = "chat") -> str:
    async with manager.registry.acquire(name, cap) as engine:
        await asyncio.sleep(seconds)
        return engine.model_id


def test_start_loads_the_configured_model_and_lists_every_usable_file(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            assert loaded(m) == ["alpha"] and m.registry.loads == 1
            infos = await m.listing.infos()
            ids = [i.id for i in infos]
            # configured model first; broken files (truncated, not-gguf, unknown-arch) are
            # left out; the missing-tensor file looks fine until loaded.
            assert ids == ["alpha", "beta", "gamma", "missing-tensor"]
            alpha = infos[0]
            assert alpha.extra["loaded"] is True and alpha.extra["capabilities"] == [
                "completions",
                "chat",
            ]
            assert alpha.extra["architecture"] == "llama"
            assert alpha.extra["context_length"] == 256
            assert alpha.extra["trained_context_length"] == 2048
            assert alpha.extra["size_bytes"] == (models_dir / "alpha.gguf").stat().st_size
            assert infos[1].extra["loaded"] is False
        finally:
            await m.close()

    asyncio.run(main())


def test_concurrent_requests_load_a_model_once(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            results = await asyncio.gather(*(hold(m, "beta", 0.05) for _ in range(12)))
            assert results == ["beta"] * 12
            assert m.registry.loads == 2  # alpha at start, beta once
            assert loaded(m) == ["alpha", "beta"]
        finally:
            await m.close()

    asyncio.run(main())


def test_least_recently_used_idle_model_is_unloaded(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()  # alpha
        try:
            await hold(m, "beta", 0)
            assert loaded(m) == ["alpha", "beta"]
            await hold(m, "alpha", 0)  # alpha is now the most recently used
            await hold(m, "gamma", 0)  # evicts beta
            assert loaded(m) == ["alpha", "gamma"]
            await hold(m, "beta", 0)  # evicts alpha
            assert loaded(m) == ["beta", "gamma"]
            assert m.registry.unloads == 2
            infos = {i.id: i.extra["loaded"] for i in await m.listing.infos()}
            assert infos == {
                "alpha": False,
                "beta": True,
                "gamma": True,
                "missing-tensor": False,
            }
        finally:
            await m.close()

    asyncio.run(main())


def test_a_model_in_use_is_never_unloaded(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir, max_loaded_models=1, model_wait_timeout=0.3)
        await m.start()
        try:
            holder = asyncio.ensure_future(hold(m, "alpha", 1.0))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as exc:
                await hold(m, "beta", 0)
            assert 0.25 < time.monotonic() - started < 1.0
            assert exc.value.status_code == 503 and exc.value.code == "model_capacity_exhausted"
            assert exc.value.headers["Retry-After"].isdigit()
            assert loaded(m) == ["alpha"]
            assert await holder == "alpha"
            # once alpha is idle, beta takes its place
            assert await hold(m, "beta", 0) == "beta"
            assert loaded(m) == ["beta"]
        finally:
            await m.close()

    asyncio.run(main())


def test_a_load_waits_for_a_busy_model_to_become_idle(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir, max_loaded_models=1, model_wait_timeout=10)
        await m.start()
        try:
            holder = asyncio.ensure_future(hold(m, "alpha", 0.5))
            await asyncio.sleep(0.05)
            waiter = asyncio.ensure_future(hold(m, "beta", 0))
            await asyncio.sleep(0.2)
            assert not waiter.done() and loaded(m) == ["alpha"]
            assert await holder == "alpha"
            assert await asyncio.wait_for(waiter, 5) == "beta"
            assert loaded(m) == ["beta"]
        finally:
            await m.close()

    asyncio.run(main())


def test_mixed_concurrent_load_stays_within_the_limit(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir, max_loaded_models=2, model_wait_timeout=30)
        await m.start()
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, m.registry.in_memory())
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        try:
            names = [MODELS[i % 3] for i in range(30)]
            got = await asyncio.gather(*(hold(m, n, 0.01 * (i % 4)) for i, n in enumerate(names)))
            assert got == names
            assert peak <= 2
            assert all(s.refs == 0 for s in m.registry._loaded.values())
        finally:
            watcher.cancel()
            await m.close()

    asyncio.run(main())


def test_broken_files_fail_clearly_and_others_keep_working(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            expectations = {
                "truncated": "truncated",
                "not-gguf": "not a GGUF file",
                "unknown-arch": "architecture 'gemma3'",
                "missing-tensor": "the backend rejected the file",
            }
            for name, reason in expectations.items():
                with pytest.raises(ModelLoadFailed) as exc:
                    await hold(m, name, 0)
                assert exc.value.status_code == 400 and exc.value.code == "model_load_failed"
                assert reason in exc.value.message, exc.value.message
            loads = m.registry.loads
            # the failure is remembered for this file version: no second load attempt
            with pytest.raises(ModelLoadFailed):
                await hold(m, "missing-tensor", 0)
            assert m.registry.loads == loads and m.registry.in_memory() == 1
            assert await hold(m, "beta", 0) == "beta"
            # replacing the file clears it
            tmp = models_dir / "fixed.tmp"
            build_tiny_model(tmp, sentence="Fixed now.")
            os.replace(tmp, models_dir / "missing-tensor.gguf")
            assert await hold(m, "missing-tensor", 0) == "missing-tensor"
        finally:
            await m.close()

    asyncio.run(main())


def test_wrong_kind_of_model_and_bad_names(models_dir: Path, default_models_dir: Path) -> None:
    shutil.copy(default_models_dir / DEFAULT_EMBEDDING_MODEL_FILE, models_dir / "emb.gguf")

    async def main() -> None:
        m = make_manager(models_dir, embedding_model="emb")
        await m.start()
        try:
            assert loaded(m) == ["alpha", "emb"]
            emb = next(i for i in await m.listing.infos() if i.id == "emb")
            assert emb.extra["capabilities"] == ["embeddings"]
            assert emb.extra["embedding_dimensions"] == 384
            with pytest.raises(InvalidRequest, match="embedding model") as exc:
                await hold(m, "emb", 0, "chat")
            assert exc.value.code == "model_not_supported"
            with pytest.raises(InvalidRequest, match="cannot create embeddings") as exc:
                await hold(m, "alpha", 0, "embeddings")
            assert exc.value.code == "model_not_supported"
            for bad in ("../alpha", "/etc/passwd", "%2e%2e%2falpha", "alpha\x00", ".."):
                with pytest.raises(InvalidRequest) as exc:
                    await hold(m, bad, 0)
                assert exc.value.code == "invalid_model_name"
            with pytest.raises(ModelNotFound) as nf:
                await hold(m, "nope", 0)
            assert "alpha" in nf.value.message and "emb" in nf.value.message
        finally:
            await m.close()

    asyncio.run(main())


def test_symlinks_outside_are_never_served(models_dir: Path, tmp_path: Path) -> None:
    outside = build_tiny_model(tmp_path / "outside" / "secret.gguf", sentence="Secret.")
    (models_dir / "alias.gguf").symlink_to(models_dir / "beta.gguf")
    (models_dir / "escape.gguf").symlink_to(outside)

    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            ids = [i.id for i in await m.listing.infos()]
            assert "alias" in ids and "escape" not in ids
            assert await hold(m, "alias", 0) == "alias"
            with pytest.raises(ModelNotFound):
                await hold(m, "escape", 0)
            # a link re-pointed outside after it was listed is refused as well
            link = models_dir / "beta-link.gguf"
            link.symlink_to(models_dir / "gamma.gguf")
            assert "beta-link" in [i.id for i in await m.listing.infos()]
            link.unlink()
            link.symlink_to(outside)
            with pytest.raises(ModelNotFound):
                await hold(m, "beta-link", 0)
            assert "Secret" not in str([e.model_id for e in m.registry.engines.values()])
        finally:
            await m.close()

    asyncio.run(main())


def test_a_replaced_file_is_reloaded_when_idle(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            first = m.registry.engines["alpha"]
            tmp = models_dir / "alpha.tmp"
            build_tiny_model(tmp, sentence="I am the new alpha, longer than before.")
            os.replace(tmp, models_dir / "alpha.gguf")
            assert await hold(m, "alpha", 0) == "alpha"
            assert m.registry.engines["alpha"] is not first and m.registry.loads == 2
            await asyncio.sleep(0.05)
            assert m.registry.unloads == 1 and m.registry.in_memory() == 1
        finally:
            await m.close()

    asyncio.run(main())


def test_streamed_response_holds_the_model_until_its_body_ends(models_dir: Path) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(3):
            yield str(i).encode()

    async def nothing() -> None:
        return None

    async def serve(response: GenerationStream, fail: bool = False) -> list[bytes]:
        sent: list[bytes] = []

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if fail:
                raise OSError("client gone")
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"])

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST"}
        with contextlib.suppress(OSError, ClientDisconnect):
            await response(scope, receive, send)
        return sent

    async def held_stream(m: AppServices) -> GenerationStream:
        # what GenerationService does: the lease joins the request's exit stack, which the
        # response takes over
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(m.registry.acquire("alpha", "chat"))
            response = GenerationStream(body(), nothing)
            response.hand_over(held.pop_all())
        return response

    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            response = await held_stream(m)
            slot = m.registry._loaded["alpha"]
            assert slot.refs == 1  # still held: the body has not been sent
            chunks = await serve(response)
            assert chunks == [b"0", b"1", b"2"] and slot.refs == 0
            # a body that is never sent (client gone first) is released as well
            response = await held_stream(m)
            assert slot.refs == 1
            assert await serve(response, fail=True) == []
            assert slot.refs == 0
            # an error inside the block releases at once
            with pytest.raises(RuntimeError):
                async with m.registry.acquire("alpha", "chat"):
                    raise RuntimeError("boom")
            assert slot.refs == 0
        finally:
            await m.close()

    asyncio.run(main())


class _Remote(Engine):
    """Stands in for the GPU mode's remote engine (an id that is not a file name)."""

    model_id = "org/remote-model"
    capabilities = Capabilities(completions=True, chat=True, embeddings=False)
    closed = False

    def stream(self, request: Any, stop: Any = None) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True

    async def info(self) -> ModelInfo:
        return ModelInfo(id=self.model_id, created=1, extra={"loaded": True})


def test_gpu_mode_serves_added_engine_and_local_embeddings(
    models_dir: Path, default_models_dir: Path
) -> None:
    shutil.copy(default_models_dir / DEFAULT_EMBEDDING_MODEL_FILE, models_dir / "emb.gguf")

    async def main() -> None:
        m = make_manager(
            models_dir,
            inference_mode="gpu",
            gpu_url="http://127.0.0.1:9",
            embedding_model="emb",
            max_loaded_models=1,
        )
        remote = _Remote()
        m.registry.pin(remote)
        await load_configured_models(m.registry, m.settings)
        try:
            # chat models on disk are not served in GPU mode; the added engine does not
            # count against MAX_LOADED_MODELS and is never unloaded
            assert [i.id for i in await m.listing.infos()] == ["org/remote-model", "emb"]
            assert list(m.registry.engines) == ["org/remote-model", "emb"]
            assert await hold(m, "org/remote-model", 0) == "org/remote-model"
            assert await hold(m, "emb", 0, "embeddings") == "emb"
            with pytest.raises(ModelNotFound):
                await hold(m, "alpha", 0)
            assert (await m.listing.info("org/remote-model")).id == "org/remote-model"
            assert m.registry.engines["org/remote-model"] is remote
        finally:
            await m.close()
        assert remote.closed

    asyncio.run(main())


def test_missing_model_at_start_names_the_alternatives(models_dir: Path) -> None:
    async def main() -> None:
        m = make_manager(models_dir, model="absent")
        with pytest.raises(FileNotFoundError) as exc:
            await m.start()
        assert "absent" in str(exc.value) and "alpha, beta, gamma" in str(exc.value)
        m2 = make_manager(models_dir, model="truncated")
        with pytest.raises(RuntimeError, match="truncated"):
            await m2.start()
        await m.close()
        await m2.close()

    asyncio.run(main())


def test_api_errors_are_never_500(models_dir: Path) -> None:
    """Every failure the manager raises for a request is a client-facing APIError."""

    async def main() -> None:
        m = make_manager(models_dir)
        await m.start()
        try:
            for name in ["", "x" * 300, "../../x", "truncated", "nope", "beta.gguf/.."]:
                with pytest.raises(APIError) as exc:
                    await hold(m, name, 0)
                assert exc.value.status_code in (400, 404), name
        finally:
            await m.close()

    asyncio.run(main())
