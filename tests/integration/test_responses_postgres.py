"""Two API processes sharing one PostgreSQL response store (several replicas behind a load
balancer): a response created on one is retrieved and continued on the other."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from tests.support.fixtures import TINY
from tests.support.responses_schema import validate_item_list, validate_response
from tests.support.server import run_server
from tests.support.tinymodel import DEFAULT_SENTENCE


def test_two_servers_share_one_postgresql_store(
    tiny_models_dir: Path, postgres_url: str, tmp_path: Path
) -> None:
    env = {
        "MODELS_DIR": str(tiny_models_dir),
        "MODEL": TINY,
        "EMBEDDING_MODEL": "",
        "N_THREADS": "1",
        "N_CTX": "256",
        "DATABASE_URL": postgres_url,
        "DATA_DIR": str(tmp_path / "unused"),
    }
    with (
        run_server(env, tmp_path / "a.log") as a,
        run_server(env, tmp_path / "b.log") as b,
    ):
        on_a = openai.OpenAI(base_url=a.v1, api_key="x", max_retries=0, timeout=60)
        on_b = openai.OpenAI(base_url=b.v1, api_key="x", max_retries=0, timeout=60)
        first = on_a.responses.create(model=TINY, input="My name is Ann.")
        got = httpx.get(f"{b.v1}/responses/{first.id}")
        assert got.status_code == 200
        validate_response(got.json())
        assert got.json()["output"][0]["content"][0]["text"] == DEFAULT_SENTENCE

        with on_b.responses.stream(
            model=TINY, input="What is my name?", previous_response_id=first.id
        ) as stream:
            second = stream.get_final_response()
        assert second.previous_response_id == first.id and second.status == "completed"
        assert second.usage is not None and first.usage is not None
        assert second.usage.input_tokens > first.usage.input_tokens

        items = httpx.get(f"{a.v1}/responses/{second.id}/input_items").json()
        validate_item_list(items)
        assert [i["content"][0]["text"] for i in items["data"]] == ["What is my name?"]

        assert httpx.delete(f"{a.v1}/responses/{first.id}").status_code == 200
        gone = httpx.post(
            f"{b.v1}/responses",
            json={"model": TINY, "input": "More?", "previous_response_id": second.id},
        )
        assert gone.status_code == 404
        assert gone.json()["error"]["param"] == "previous_response_id"
    assert not (tmp_path / "unused").exists()  # nothing written beside the shared store
