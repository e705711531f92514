"""Stored responses belong to the API key that stored them, against the real server with
two keys, on SQLite and on a real PostgreSQL: the other key gets 404 response_not_found
for retrieve, input items, continuation and delete; the owner keeps full use; the access
log names no response id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fixtures import TINY
from tests.support.hardening_fixtures import model_env
from tests.support.server import Server, run_server

KEY_A = "sk-tenant-a-0123456789abcdef"
KEY_B = "sk-tenant-b-fedcba9876543210"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tiny_models_dir: Path, tmp_path: Path
) -> Iterator[Server]:
    env = model_env(tiny_models_dir, data_dir=tmp_path / "data", api_keys=f"{KEY_A},{KEY_B}")
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with run_server(env, tmp_path / "server.log") as s:
        yield s


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=60)


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_not_found(r: httpx.Response, param: str | None = None) -> None:
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["code"] == "response_not_found" and err["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_another_key_cannot_see_continue_or_delete(server: Server, stream: bool) -> None:
    alice = client(server, KEY_A)
    if stream:
        with alice.responses.stream(model=TINY, input="My secret is 42.") as events:
            first = events.get_final_response()
    else:
        first = alice.responses.create(model=TINY, input="My secret is 42.")
    url = f"{server.v1}/responses/{first.id}"

    assert_not_found(httpx.get(url, headers=as_key(KEY_B)))
    assert_not_found(httpx.get(url + "/input_items", headers=as_key(KEY_B)))
    for streamed in (False, True):
        body = {"model": TINY, "input": "What is my secret?", "stream": streamed,
                "previous_response_id": first.id}  # fmt: skip
        continued = httpx.post(f"{server.v1}/responses", json=body, headers=as_key(KEY_B))
        assert_not_found(continued, "previous_response_id")
    assert_not_found(httpx.delete(url, headers=as_key(KEY_B)))
    # The openai client raises its NotFoundError, as for an unknown id.
    with pytest.raises(openai.NotFoundError):
        client(server, KEY_B).responses.retrieve(first.id)

    # Nothing of that touched Alice's response.
    assert alice.responses.retrieve(first.id).id == first.id
    items = httpx.get(url + "/input_items", headers=as_key(KEY_A)).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["My secret is 42."]
    second = alice.responses.create(
        model=TINY, input="What is my secret?", previous_response_id=first.id
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the history came along
    # Bob's own responses work as usual, and are not Alice's.
    bobs = client(server, KEY_B).responses.create(model=TINY, input="Hi")
    assert_not_found(httpx.get(f"{server.v1}/responses/{bobs.id}", headers=as_key(KEY_A)))
    assert httpx.delete(url, headers=as_key(KEY_A)).status_code == 200
    assert_not_found(httpx.get(url, headers=as_key(KEY_A)))

    log = server.log()
    assert first.id not in log and bobs.id not in log  # route templates, not ids
    assert "/v1/responses/{response_id}" in log
    assert KEY_A not in log and KEY_B not in log
