"""API keys against the real server: Bearer auth on every non-public route, OpenAI-style
401s, public health and docs, keys from the environment and from a file, never logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gpt4all_api.middleware.auth import APIKeyMiddleware
from gpt4all_api.settings import Settings
from tests.support.hardening_fixtures import TINY, model_env, serve
from tests.support.server import Server

ENV_KEYS = ["sk-env-key-one-0123456789", "sk-env-key-two-abcdefghij"]
FILE_KEY = "sk-file-key-zyxwvutsrq"
WRONG = "sk-wrong-key-0000000000"


@pytest.fixture(scope="module")
def server(loop_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys_file = tmp_path_factory.mktemp("keys") / "api_keys.txt"
    keys_file.write_text(f"# service keys\n\n  {FILE_KEY}  \n", encoding="utf-8")
    env = model_env(loop_models_dir, api_keys=",".join(ENV_KEYS), api_keys_file=keys_file)
    with serve(tmp_path_factory, "auth-server", env) as s:
        yield s


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_auth_error(r: httpx.Response, code: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {
        "error": {
            "message": r.json()["error"]["message"],
            "type": "authentication_error",
            "param": None,
            "code": code,
        }
    }


def test_every_v1_route_needs_a_key(server: Server) -> None:
    body = {"model": TINY, "prompt": "hi", "max_tokens": 2}
    for method, path, kwargs in [
        ("GET", "/v1/models", {}),
        ("GET", f"/v1/models/{TINY}", {}),
        ("POST", "/v1/completions", {"json": body}),
        ("POST", "/v1/chat/completions", {"json": {"model": TINY, "messages": []}}),
        ("GET", "/v1/no-such-route", {}),  # deny by default: no route discovery either
        ("GET", "/metrics", {}),
    ]:
        r = httpx.request(method, server.base_url + path, timeout=10, **kwargs)
        assert_auth_error(r, "missing_api_key")
        r = httpx.request(method, server.base_url + path, headers=bearer(WRONG), **kwargs)
        assert_auth_error(r, "invalid_api_key")
    for header in ("Bearer", "Basic " + ENV_KEYS[0], ENV_KEYS[0], "Bearer x" + ENV_KEYS[0]):
        r = httpx.get(server.v1 + "/models", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_keys_from_env_and_file_work_with_the_openai_client(server: Server) -> None:
    for key in [*ENV_KEYS, FILE_KEY]:
        client = openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=30)
        assert TINY in [m.id for m in client.models.list()]
        r = client.completions.create(model=TINY, prompt="hi", max_tokens=3)
        assert r.choices[0].text == "Hello, I am"
    assert httpx.get(server.base_url + "/metrics", headers=bearer(FILE_KEY)).status_code == 200
    # the scheme is case-insensitive, as in RFC 7235
    r = httpx.get(server.v1 + "/models", headers={"Authorization": f"bearer {ENV_KEYS[1]}"})
    assert r.status_code == 200


def test_openai_client_raises_authentication_error(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key=WRONG, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_health_and_docs_stay_public(server: Server) -> None:
    public = ["/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"]
    for path in [*public, "/static-docs/swagger-ui.css"]:
        assert httpx.get(server.base_url + path, timeout=10).status_code == 200, path
    spec = httpx.get(server.base_url + "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    completions = spec["paths"]["/v1/completions"]["post"]
    assert completions["security"] == [{"bearerAuth": []}] and "401" in completions["responses"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_keys_never_appear_in_the_logs(server: Server) -> None:
    httpx.get(server.v1 + "/models", headers=bearer(WRONG))
    httpx.get(server.v1 + "/models", headers=bearer(ENV_KEYS[0]))
    log = server.log()
    assert "gpt4all_api.access" in log
    for secret in [*ENV_KEYS, FILE_KEY, WRONG]:
        assert secret not in log


def test_settings_parse_key_lists_and_hide_them(tmp_path: Path) -> None:
    def keys(**kw: object) -> list[str]:
        settings = Settings(_env_file=None, **kw)  # type: ignore[arg-type]
        assert all(k.get_secret_value() not in repr(settings) for k in settings.all_api_keys())
        return [k.get_secret_value() for k in settings.all_api_keys()]

    assert keys(api_keys="key-a, key-b,,key-c ") == ["key-a", "key-b", "key-c"]
    assert keys(api_keys='["key-x,y", "key-z"]') == ["key-x,y", "key-z"]
    assert keys(api_keys="") == []
    f = tmp_path / "keys"
    f.write_text("# comment\nkey-f1\n\n key-f2 \n", encoding="utf-8")
    assert keys(api_keys="key-a", api_keys_file=str(f)) == ["key-a", "key-f1", "key-f2"]
    f.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(ValueError, match="API_KEYS_FILE"):
        keys(api_keys_file=str(f))
    with pytest.raises(ValueError, match="cannot be read"):
        keys(api_keys_file=str(tmp_path / "missing"))


def test_key_check_compares_against_every_key() -> None:
    from pydantic import SecretStr

    mw = APIKeyMiddleware(app=None, keys=[SecretStr("alpha"), SecretStr("beta")])  # type: ignore[arg-type]
    assert mw.check(b"alpha") and mw.check(b"beta")
    assert not mw.check(b"alph") and not mw.check(b"alphaa") and not mw.check(b"")
