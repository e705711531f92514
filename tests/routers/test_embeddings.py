"""``POST /v1/embeddings`` on the real server with the default models (openai 1.x client).

Vectors are checked against an independent numpy BERT forward pass of the original
safetensors checkpoint (``tests/support/embedding_reference.py``), not against gpt4all itself.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from gpt4all_api.model_store import DEFAULT_CHAT_MODEL_FILE, DEFAULT_EMBEDDING_MODEL_FILE
from tests.support.embedding_reference import ReferenceBert, bert_source, cosine, token_count
from tests.support.openai_schema import validate
from tests.support.server import Server, run_server

EMB = DEFAULT_EMBEDDING_MODEL_FILE.removesuffix(".gguf")
SMOL = DEFAULT_CHAT_MODEL_FILE.removesuffix(".gguf")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Héllo, wörld! It's 2024; isn't it?",
    "hello",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceBert:
    return ReferenceBert(bert_source(tmp_path_factory.mktemp("bert-src")))


def post(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.v1 + "/embeddings", json=body, timeout=60)


def decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


def test_openai_client_default_base64_matches_reference(
    smol_client: openai.OpenAI, reference: ReferenceBert
) -> None:
    # With numpy installed the 1.x client asks for base64 and decodes it itself.
    result = smol_client.embeddings.create(model=EMB, input=TEXTS)
    assert result.model == EMB and result.object == "list"
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    for text, item in zip(TEXTS, result.data, strict=True):
        assert len(item.embedding) == 384
        assert cosine(item.embedding, reference.embed(text)) > 0.999, text
    expected_tokens = sum(token_count(reference, t) for t in TEXTS)
    assert result.usage.prompt_tokens == expected_tokens
    assert result.usage.total_tokens == expected_tokens


def test_float_and_base64_agree_exactly(smol_server: Server) -> None:
    as_float = post(smol_server, {"model": EMB, "input": TEXTS, "encoding_format": "float"})
    as_b64 = post(smol_server, {"model": EMB, "input": TEXTS, "encoding_format": "base64"})
    assert as_float.status_code == as_b64.status_code == 200
    f, b = as_float.json(), as_b64.json()
    validate("CreateEmbeddingResponse", f)
    assert f["usage"] == b["usage"]
    for fi, bi in zip(f["data"], b["data"], strict=True):
        assert isinstance(bi["embedding"], str)
        vec = decode(bi["embedding"])
        assert vec.shape == (384,)
        assert np.array_equal(np.asarray(fi["embedding"], dtype=np.float32), vec)


def test_single_string_default_float_and_schema(
    smol_server: Server, reference: ReferenceBert
) -> None:
    r = post(smol_server, {"model": EMB, "input": "Paris is the capital of France.", "user": "u1"})
    assert r.status_code == 200, r.text
    body = r.json()
    validate("CreateEmbeddingResponse", body)
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert isinstance(item["embedding"], list)
    assert abs(np.linalg.norm(item["embedding"]) - 1) < 1e-3
    assert cosine(item["embedding"], reference.embed("Paris is the capital of France.")) > 0.999
    assert body["usage"]["prompt_tokens"] == 7


def test_similar_texts_are_closer_than_unrelated(smol_client: openai.OpenAI) -> None:
    texts = ["A cat is sitting on the mat.", "A kitten sits on a rug.", "Stock prices fell."]
    a, b, c = (
        np.asarray(d.embedding) for d in smol_client.embeddings.create(model=EMB, input=texts).data
    )
    assert a @ b > a @ c + 0.2
    assert a @ b > b @ c + 0.2


def test_long_input_is_accepted_and_counted(smol_server: Server, reference: ReferenceBert) -> None:
    text = "Embeddings turn sentences into vectors for semantic search. " * 200
    r = post(smol_server, {"model": EMB, "input": [text, "short"]})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = token_count(reference, text) + 1
    assert expected > 1500
    assert expected <= body["usage"]["prompt_tokens"] <= expected + 64  # window overlaps
    for item in body["data"]:
        assert abs(np.linalg.norm(item["embedding"]) - 1) < 1e-3


def test_dimensions(smol_server: Server, smol_client: openai.OpenAI) -> None:
    r = post(smol_server, {"model": EMB, "input": "x", "dimensions": 384})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    with pytest.raises(openai.BadRequestError) as exc:
        smol_client.embeddings.create(model=EMB, input="x", dimensions=128)
    assert exc.value.body["param"] == "dimensions"
    assert exc.value.body["code"] == "unsupported_dimensions"
    assert "384" in exc.value.body["message"]


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"input": [1, 2, 3]}, "input", "Token arrays"),
        ({"input": [[1, 2], [3]]}, "input", "Token arrays"),
        ({"input": ""}, "input", "empty string"),
        ({"input": ["ok", ""]}, "input[1]", "empty string"),
        ({"input": ["ok", "  \n"]}, "input[1]", "whitespace"),
        ({"input": []}, "input", "empty list"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"input": "x", "dimensions": 0}, "dimensions", None),
        ({"input": ["a", 1]}, "input[1]", None),  # the element that is wrong
        ({}, "input", "Missing"),
    ],
)
def test_invalid_inputs_are_400(
    smol_server: Server, body: dict[str, Any], param: str, needle: str | None
) -> None:
    r = post(smol_server, {"model": EMB, **body})
    assert r.status_code == 400, r.text
    validate("ErrorResponse", r.json())
    error = r.json()["error"]
    assert error["param"] == param
    if needle:
        assert needle in error["message"]


def test_too_many_inputs(smol_server: Server) -> None:
    r = post(smol_server, {"model": EMB, "input": ["a"] * 2049})
    assert r.status_code == 400 and "2048" in r.json()["error"]["message"]


def test_wrong_or_unknown_models(smol_server: Server, smol_client: openai.OpenAI) -> None:
    r = post(smol_server, {"model": SMOL, "input": "hi"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_not_supported"
    assert r.json()["error"]["param"] == "model"
    with pytest.raises(openai.BadRequestError) as exc:
        smol_client.chat.completions.create(model=EMB, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["code"] == "model_not_supported"
    with pytest.raises(openai.BadRequestError):
        smol_client.completions.create(model=EMB, prompt="hi")
    r = post(smol_server, {"model": "text-embedding-3-small", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert EMB in r.json()["error"]["message"]  # says what is available
    for bad in ("../" + EMB, "/etc/passwd", "..%2F" + EMB):
        r = post(smol_server, {"model": bad, "input": "hi"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model_name"


def test_listed_with_capabilities(smol_server: Server) -> None:
    listing = httpx.get(smol_server.v1 + "/models").json()
    validate("ListModelsResponse", listing)
    models = {m["id"]: m for m in listing["data"]}
    assert models[EMB]["capabilities"] == ["embeddings"]
    assert models[EMB]["embedding_dimensions"] == 384
    assert models[EMB]["architecture"] == "bert"
    assert models[SMOL]["capabilities"] == ["completions", "chat"]


def test_chat_still_works_alongside(smol_client: openai.OpenAI, tmp_path: Path) -> None:
    out = smol_client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0
    )
    assert out.usage is not None and out.usage.completion_tokens <= 4
    emb = smol_client.embeddings.create(model=EMB, input="still here")
    assert len(emb.data[0].embedding) == 384


def test_gpu_mode_embeds_on_cpu(
    fake_tgi: Any, default_models_dir: Path, tmp_path: Path, reference: ReferenceBert
) -> None:
    """INFERENCE_MODE=gpu: chat goes upstream, /v1/embeddings stays on the local CPU model
    (local chat GGUFs are not offered: the upstream is the chat model)."""
    from tests.support.gpu_fixtures import gpu_env

    env = gpu_env(fake_tgi.url, MODELS_DIR=str(default_models_dir), EMBEDDING_MODEL=EMB)
    with run_server(env, tmp_path / "server.log", timeout=60) as server:
        models = httpx.get(server.v1 + "/models").json()["data"]
        ids = [m["id"] for m in models]
        assert EMB in ids and SMOL not in ids and len(ids) == 2  # upstream + embeddings
        emb = next(m for m in models if m["id"] == EMB)
        assert emb["loaded"] is True and emb["capabilities"] == ["embeddings"]
        r = post(server, {"model": EMB, "input": TEXTS[:2]})
        assert r.status_code == 200, r.text
        body = r.json()
        validate("CreateEmbeddingResponse", body)
        for text, item in zip(TEXTS[:2], body["data"], strict=True):
            assert cosine(item["embedding"], reference.embed(text)) > 0.999
        upstream = next(i for i in ids if i != EMB)
        r = post(server, {"model": upstream, "input": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"
        assert post(server, {"model": SMOL, "input": "x"}).status_code == 404


@pytest.fixture
def offline_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain tokenizes with tiktoken's ``cl100k_base``, whose vocabulary tiktoken
    downloads on first use (no network here): a byte-level tiktoken encoding under that
    name stands in. What LangChain sends is still what it always sends: token id arrays."""
    import tiktoken
    import tiktoken.registry

    byte_level = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\w+| ?\d+| ?[^\s\w\d]+|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", byte_level)


def test_langchain_defaults_get_a_400_that_says_what_to_do(
    smol_server: Server, offline_tiktoken: None
) -> None:
    """LangChain's ``OpenAIEmbeddings()`` sends tiktoken ids, which mean nothing to the
    served model: a 400 naming the setting that makes it send text."""
    from langchain_openai import OpenAIEmbeddings

    defaults = OpenAIEmbeddings(model=EMB, base_url=smol_server.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        defaults.embed_documents(["Paris is the capital of France."])
    err = exc.value.body
    assert isinstance(err, dict) and err["param"] == "input"
    assert "check_embedding_ctx_length=False" in err["message"]
    assert "Token arrays are not supported" in err["message"]


def test_langchain_with_check_embedding_ctx_length_false_embeds_text(
    smol_server: Server, smol_client: openai.OpenAI
) -> None:
    """The documented setting: LangChain sends the texts, and gets the server's vectors."""
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(
        model=EMB,
        base_url=smol_server.v1,
        api_key="x",
        max_retries=0,
        check_embedding_ctx_length=False,
    )
    vectors = embedder.embed_documents(TEXTS)
    query = embedder.embed_query(TEXTS[1])
    direct = smol_client.embeddings.create(model=EMB, input=TEXTS)
    assert len(vectors) == len(TEXTS) and all(len(v) == 384 for v in vectors)
    for got, want in zip(vectors, direct.data, strict=True):
        assert cosine(got, want.embedding) > 0.9999
    assert cosine(query, vectors[1]) > 0.9999
