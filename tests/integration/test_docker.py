"""Docker: the image, the CPU compose stack, the GPU and development overlays.

Two kinds of tests:

* static and ``compose config`` checks (the Dockerfiles, what each compose combination
  renders to). They need at most a Compose binary, no engine;
* engine tests (``@pytest.mark.docker``): build the image with the README's command, bring
  the real docker-compose.yaml up, drive it with the openai client, check the container runs
  as non-root, serve offline, hot reload in development mode; always torn down with
  ``down -v``. They skip, saying why (and how to start an engine), when ``docker info``
  fails; .ci/run starts one where it can.

Each stack gets its own Compose project name and a free host port (``PORT``, which
docker-compose.yaml publishes, default 4891), so a developer's own stack is left alone.
The image is tagged ``gpt4all_api:test`` (``GPT4ALL_API_IMAGE``) and kept, so a rerun
builds from the layer cache in seconds.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support.server import ROOT, free_port
from tests.support.tinymodel import build_tiny_model

DOCKERFILE = ROOT / "gpt4all_api" / "Dockerfile.buildkit"
CLASSIC_DOCKERFILE = ROOT / "gpt4all_api" / "Dockerfile"
TEST_IMAGE = os.environ.get("GPT4ALL_API_TEST_IMAGE", "gpt4all_api:test")
DEFAULT_CHAT_MODEL = "SmolLM2-135M-Instruct.Q4_1"
# The README's build command, with the test tag instead of `gpt4all_api`.
SEED_BUILD = (
    "DOCKER_BUILDKIT=1 docker build -t {tag} --progress plain -f gpt4all_api/Dockerfile.buildkit ."
)
KIT_HINT = 'start one with: eval "$(bash ../shared/container-kit/up.sh)"'


# --- helpers -----------------------------------------------------------------------------


def run(
    cmd: list[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command (a list, or a shell string); on failure with check, show its output."""
    proc = subprocess.run(
        cmd,
        shell=isinstance(cmd, str),
        cwd=str(cwd),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{cmd!r} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment for docker/compose, minus settings that would leak in.

    The kit's Podman stores a HEALTHCHECK only in Docker-format images: BUILDAH_FORMAT
    asks for that (a real Docker engine ignores the variable).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "MODEL_ID")}
    env.setdefault("BUILDAH_FORMAT", "docker")
    env.update(extra)
    return env


@functools.cache
def compose_cmd() -> tuple[str, ...] | None:
    """`docker compose` when it answers, else `docker-compose`, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    return None


@functools.cache
def engine_problem() -> str | None:
    """Why the engine tests cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    if compose_cmd() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`docker info` timed out: no Docker engine answers; {KIT_HINT}"
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info`: {why}); {KIT_HINT}"
    return None


def needs_engine() -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)


def needs_compose() -> tuple[str, ...]:
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    return cmd


def compose_config(*files: str, env: Mapping[str, str], check: bool = True) -> dict:
    """What `compose -f ... config` renders, parsed (no engine needed)."""
    cmd = [*needs_compose()]
    for f in files:
        cmd += ["-f", f]
    proc = run([*cmd, "config"], env=env, check=check)
    return yaml.safe_load(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr}


def env_file(tmp_path: Path, **values: str) -> Path:
    """An interpolation env file for `compose --env-file`, isolating tests from .env edits."""
    path = tmp_path / f"compose-{uuid.uuid4().hex[:8]}.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def as_dict(environment: object) -> dict[str, str | None]:
    """A service's `environment`, as compose renders it (mapping or KEY=VALUE list)."""
    if isinstance(environment, dict):
        return {k: None if v is None else str(v) for k, v in environment.items()}
    out: dict[str, str | None] = {}
    for item in environment or []:
        key, sep, value = str(item).partition("=")
        out[key] = value if sep else None
    return out


def port_targets(service: dict) -> list[tuple[str, str]]:
    """(published, target) pairs from short or long port syntax."""
    pairs = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            pairs.append((str(p.get("published")), str(p.get("target"))))
        else:
            published, _, target = str(p).rpartition(":")
            pairs.append((published.rpartition(":")[2], target))
    return pairs


def duration_seconds(value: object) -> float:
    """Compose durations: '30m', '1m30s', '90s', or nanoseconds as an int."""
    if isinstance(value, int | float):
        return float(value) / 1e9
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)", str(value)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}.get(unit, 0)
    return total


def dockerfile_instructions(path: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    return [
        " ".join(line.split())
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def inspect(obj: str, fmt: str = "{{json .}}") -> object:
    out = run(["docker", "inspect", "--format", fmt, obj]).stdout
    return json.loads(out)


def wait_healthy(container: str, timeout: float = 180) -> str:
    """Wait until the container is healthy; returns how that was established.

    A Docker engine runs the HEALTHCHECK itself and reports `healthy`. The kit's Podman
    schedules health checks with systemd timers, which these machines lack, so the status
    stays `starting`: then the container's own configured check command is run with
    `docker exec`, the same command with the same meaning (exit 0 = healthy).
    """
    test = inspect(container, "{{json .Config.Healthcheck}}") or {}
    check = list(test.get("Test") or [])
    assert check and check[0] in ("CMD", "CMD-SHELL"), f"no healthcheck on {container}: {test}"
    exec_cmd = check[1:] if check[0] == "CMD" else ["/bin/sh", "-c", check[1]]
    deadline = time.monotonic() + timeout
    while True:
        state = inspect(container, "{{json .State}}")
        if state.get("Status") in ("exited", "dead"):
            logs = run(["docker", "logs", container], check=False)
            pytest.fail(f"{container} stopped: {state}\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
        if (state.get("Health") or {}).get("Status") == "healthy":
            return "engine"
        probe = run(["docker", "exec", container, *exec_cmd], check=False, timeout=30)
        if probe.returncode == 0:
            return "exec"
        if time.monotonic() > deadline:
            logs = run(["docker", "logs", container], check=False)
            pytest.fail(
                f"{container} not healthy after {timeout}s: {probe.stderr.strip()}\n"
                f"{logs.stdout[-4000:]}{logs.stderr[-4000:]}"
            )
        time.sleep(1)


@dataclass
class Stack:
    """A running Compose project."""

    compose: list[str]
    env: dict[str, str]
    cwd: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __call__(self, *args: str, timeout: float = 600, check: bool = True):
        return run([*self.compose, *args], env=self.env, cwd=self.cwd, timeout=timeout, check=check)

    def container(self, service: str = "gpt4all_api") -> str:
        ids = self("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"expected one {service} container, got {ids}"
        return ids[0]

    def logs(self) -> str:
        return self("logs", "--no-color", check=False).stdout


@contextmanager
def compose_stack(
    files: list[str],
    cwd: Path,
    *,
    build: bool,
    services: tuple[str, ...] = ("gpt4all_api",),
    **env: str,
) -> Iterator[Stack]:
    """`compose -p <unique> -f ... up -d [--build] services`, always `down -v` afterwards."""
    project = f"g4a-test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    compose = [*needs_compose(), "-p", project]
    for f in files:
        compose += ["-f", f]
    stack = Stack(compose, base_env(PORT=str(port), GPT4ALL_API_IMAGE=TEST_IMAGE, **env), cwd, port)
    try:
        up = ["up", "-d", *(["--build"] if build else []), *services]
        stack(*up, timeout=1200)
        yield stack
    finally:
        stack("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300, check=False)


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.base_url + "/v1", api_key="not needed", max_retries=0, timeout=120
    )


# --- the Dockerfiles (static) --------------------------------------------------------------


def test_classic_dockerfile_is_the_buildkit_one_without_cache_mounts() -> None:
    buildkit = [
        re.sub(r"--mount=type=cache,\S+ ", "", line) for line in dockerfile_instructions(DOCKERFILE)
    ]
    assert buildkit == dockerfile_instructions(CLASSIC_DOCKERFILE), (
        "gpt4all_api/Dockerfile must equal gpt4all_api/Dockerfile.buildkit minus its "
        "`--mount=type=cache,...` options: port the change"
    )
    assert not any("--mount" in line for line in dockerfile_instructions(CLASSIC_DOCKERFILE))


def test_dockerfile_layout() -> None:
    lines = dockerfile_instructions(DOCKERFILE)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    froms = [line for line in lines if line.startswith("FROM ")]
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in froms), froms

    def index(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    # Dependencies (with a pip cache mount) in a layer before any source is copied.
    deps = index("RUN --mount=type=cache,target=/root/.cache/pip pip install -r")
    assert index("COPY requirements.txt") < deps < index("COPY gpt4all_api/")
    # The default models are baked in from the model tooling only, before the app source.
    bake = index("RUN --mount=type=cache,target=/root/.cache/gpt4all-api-wheels python -c")
    assert "fetch_defaults(" in lines[bake]
    assert index("COPY gpt4all_api/model_store/__init__.py") < bake
    assert bake < index("COPY gpt4all_api/ gpt4all_api/")
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    user = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    assert user[-1].split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    cmd = [line for line in final if line.startswith("CMD ")]
    assert json.loads(cmd[-1][4:]) == ["python", "-m", "gpt4all_api"], "exec-form CMD"
    health = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert health and "curl" not in health[0] and "wget" not in health[0]
    assert json.loads(health[0].split(" CMD ", 1)[1]) == ["python", "-m", "gpt4all_api.healthcheck"]


def test_stored_responses_live_in_a_named_volume() -> None:
    """DATA_DIR=/data in the image, owned by the app user; compose mounts a named volume
    there, so stored responses survive `docker compose down/up` (static: no Compose)."""
    final = dockerfile_instructions(DOCKERFILE)
    env = next(line for line in final if line.startswith("ENV ") and "MODELS_DIR" in line)
    assert "DATA_DIR=/data" in env.split()
    assert any("mkdir -p /models /data" in line and "chown app:app /models /data" in line
               for line in final)  # fmt: skip
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    api = compose["services"]["gpt4all_api"]
    assert api["environment"]["DATA_DIR"] == "/data"
    assert "gpt4all_api_data:/data" in api["volumes"]
    assert "gpt4all_api_data" in compose["volumes"]


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:3] == ["*", "!requirements.txt", "!gpt4all_api/"]
    assert "gpt4all_api/**/*.gguf" in ignore


# --- what the compose files render to (needs Compose, no engine) ---------------------------


def test_cpu_compose_renders_the_api_only(tmp_path: Path) -> None:
    env = base_env()
    cfg = compose_config("docker-compose.yaml", env=env | {"PORT": "4891"})  # as in .env
    assert set(cfg["services"]) == {"gpt4all_api"}
    api = cfg["services"]["gpt4all_api"]
    assert api["build"]["dockerfile"] == "gpt4all_api/Dockerfile.buildkit"
    assert api["image"] == "gpt4all_api"
    assert ("4891", "4891") in port_targets(api)
    assert api["restart"] in ("unless-stopped", "always")
    environment = as_dict(api["environment"])
    assert environment["MODELS_DIR"] == "/models"
    assert environment["RELOAD"] == "false", "production never runs the reloader"
    assert environment.get("INFERENCE_MODE", "cpu") == "cpu"
    assert any(str(v).endswith(":/models") or ":/models:" in str(v) for v in api["volumes"])
    assert not any("/app/gpt4all_api" in str(v) for v in api["volumes"]), "no source mount"
    health = api["healthcheck"]
    assert health["test"][:1] == ["CMD"] and duration_seconds(health["start_period"]) >= 30
    # The host port follows PORT (the test stacks use that); the container's stays 4891.
    moved = compose_config("docker-compose.yaml", env=env | {"PORT": "5999"})
    assert ("5999", "4891") in port_targets(moved["services"]["gpt4all_api"])


def test_gpu_compose_renders_tgi_and_the_api_in_gpu_mode(tmp_path: Path) -> None:
    interp = env_file(tmp_path, MODEL_ID="Qwen/Qwen2.5-1.5B-Instruct", QUANTIZE="eetq")
    cmd = [*needs_compose(), "--env-file", str(interp)]
    out = run(
        [*cmd, "-f", "docker-compose.yaml", "-f", "docker-compose.gpu.yaml", "config"],
        env=base_env(),
    )
    cfg = yaml.safe_load(out.stdout)
    assert set(cfg["services"]) == {"gpt4all_api", "gpt4all_gpu"}
    tgi = cfg["services"]["gpt4all_gpu"]
    image, _, tag = tgi["image"].rpartition(":")
    assert image == "ghcr.io/huggingface/text-generation-inference"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pinned TGI version, not {tag!r}"
    command = tgi["command"] if isinstance(tgi["command"], list) else tgi["command"].split()
    assert command[command.index("--model-id") + 1] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert command[command.index("--num-shard") + 1] == "1"
    tgi_env = as_dict(tgi["environment"])
    assert tgi_env["QUANTIZE"] == "eetq"
    assert tgi_env.get("HF_TOKEN") in (None, ""), "unset optional values are not invented"
    assert str(tgi["shm_size"]).lower() in ("1g", "1gb", str(2**30))
    assert any(str(v).split(":")[1] == "/data" for v in tgi["volumes"])
    devices = tgi["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert duration_seconds(tgi["healthcheck"]["start_period"]) >= 600
    assert ("8080", "80") in port_targets(tgi)

    api = cfg["services"]["gpt4all_api"]
    api_env = as_dict(api["environment"])
    assert api_env["INFERENCE_MODE"] == "gpu"
    assert api_env["GPU_BACKEND"] == "tgi"
    assert api_env["GPU_URL"] == "http://gpt4all_gpu:80"
    assert api_env["GPU_MODEL_ID"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert api["depends_on"]["gpt4all_gpu"]["condition"] == "service_healthy"


def test_gpu_compose_without_model_id_fails_clearly(tmp_path: Path) -> None:
    cmd = [*needs_compose(), "--env-file", str(env_file(tmp_path))]
    proc = run(
        [*cmd, "-f", "docker-compose.yaml", "-f", "docker-compose.gpu.yaml", "config"],
        env=base_env(),
        check=False,
    )
    assert proc.returncode != 0
    assert "MODEL_ID is not set" in proc.stderr + proc.stdout


def test_env_file_compose_file_selects_the_gpu_stack(tmp_path: Path) -> None:
    """The README's `docker compose --env-file .env up --build`: COMPOSE_FILE in .env decides."""
    cmd = [*needs_compose()]
    gpu = env_file(
        tmp_path,
        COMPOSE_FILE="docker-compose.yaml:docker-compose.gpu.yaml",
        MODEL_ID="Qwen/Qwen2.5-1.5B-Instruct",
    )
    out = run([*cmd, "--env-file", str(gpu), "config", "--services"], env=base_env())
    assert set(out.stdout.split()) == {"gpt4all_api", "gpt4all_gpu"}
    cpu = env_file(tmp_path)  # the shipped .env leaves COMPOSE_FILE commented out
    out = run([*cmd, "--env-file", str(cpu), "config", "--services"], env=base_env())
    assert out.stdout.split() == ["gpt4all_api"]


def test_dev_overlay_mounts_the_source_and_reloads(tmp_path: Path) -> None:
    cfg = compose_config("docker-compose.yaml", "docker-compose.dev.yaml", env=base_env())
    api = cfg["services"]["gpt4all_api"]
    assert as_dict(api["environment"])["RELOAD"] == "true"
    sources = [str(v) for v in api["volumes"]]
    assert any(":/app/gpt4all_api" in v for v in sources), sources
    assert any(":/models" in v for v in sources), "the models volume stays"


def test_shipped_env_keeps_the_default_stack_on_cpu() -> None:
    """.env documents COMPOSE_FILE and MODEL_ID but leaves them off: plain `up` is CPU."""
    active = [
        line.split("=", 1)[0]
        for line in (ROOT / ".env").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "COMPOSE_FILE" not in active and "MODEL_ID" not in active
    text = (ROOT / ".env").read_text()
    assert "# COMPOSE_FILE=docker-compose.yaml:docker-compose.gpu.yaml" in text
    assert "# COMPOSE_FILE=docker-compose.yaml:docker-compose.dev.yaml" in text


# --- on a real engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built with the README's command (BuildKit; the kit maps it to podman build)."""
    needs_engine()
    started = time.monotonic()
    run(SEED_BUILD.format(tag=TEST_IMAGE), env=base_env(), timeout=1800)
    elapsed = time.monotonic() - started
    size = inspect(TEST_IMAGE, "{{json .Size}}")
    print(f"\nimage {TEST_IMAGE}: built in {elapsed:.1f}s, {size / 1e6:.0f} MB")
    return TEST_IMAGE


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_image_config(image: str) -> None:
    config = inspect(image, "{{json .Config}}")
    assert config["User"].split(":")[0] not in ("", "0", "root")
    assert config["Cmd"] == ["python", "-m", "gpt4all_api"]
    assert "4891/tcp" in (config.get("ExposedPorts") or {})
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MODELS_DIR"] == "/models" and env["RELOAD"] == "false"
    size = inspect(image, "{{json .Size}}")
    assert size < 700e6, f"image grew to {size / 1e6:.0f} MB"
    # The default models are in the image, verified by their pinned checksums.
    listing = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "python",
            "-c",
            "import os; print(sorted(os.listdir(os.environ['BUILTIN_MODELS_DIR'])))",
        ]
    ).stdout
    assert f"{DEFAULT_CHAT_MODEL}.gguf" in listing and "all-MiniLM-L6-v2.f16.gguf" in listing


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_classic_builder_builds_the_image(image: str) -> None:
    """`DOCKER_BUILDKIT=0 docker build -f gpt4all_api/Dockerfile .` (no cache mounts)."""
    tag = f"{TEST_IMAGE}-classic"
    try:
        run(
            ["docker", "build", "-q", "-t", tag, "-f", "gpt4all_api/Dockerfile", "."],
            env=base_env(DOCKER_BUILDKIT="0"),
            timeout=1800,
        )
        assert inspect(tag, "{{json .Config.Cmd}}") == ["python", "-m", "gpt4all_api"]
    finally:
        run(["docker", "rmi", "-f", tag], check=False)


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_compose_up_serves_openai_clients_as_non_root(image: str, tmp_path: Path) -> None:
    """`docker compose up --build gpt4all_api` with the real docker-compose.yaml."""
    models = tmp_path / "models"  # empty: the baked-in default model must serve
    models.mkdir()
    models.chmod(0o755)
    with compose_stack(
        ["docker-compose.yaml"], ROOT, build=True, HOST_MODELS_DIR=str(models)
    ) as stack:
        container = stack.container()
        wait_healthy(container)
        health = httpx.get(stack.base_url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["inference_mode"] == "cpu"

        client = openai_client(stack)
        model = DEFAULT_CHAT_MODEL
        assert model in [m.id for m in client.models.list().data], "baked-in model not served"

        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=12,
                temperature=0,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip(), chunks
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

        completion = client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=8, temperature=0
        )
        assert completion.choices[0].text.strip()
        assert completion.usage.completion_tokens > 0

        uid = stack("exec", "-T", "gpt4all_api", "id", "-u").stdout.strip()
        assert uid.isdigit() and int(uid) != 0, f"container runs as uid {uid}"
        assert stack("ps", "-q").stdout.split() == [container], "only the API runs"
        logs = stack.logs()
        assert "reloader" not in logs.lower(), "production mode must not run the reloader"


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_image_serves_with_no_network(image: str) -> None:
    """Offline: the baked-in default model serves with networking switched off."""
    name = f"g4a-offline-{uuid.uuid4().hex[:10]}"
    run(["docker", "run", "-d", "--name", name, "--network", "none", image])
    try:
        wait_healthy(name)
        probe = (
            "import json, urllib.request as u;"
            "print(json.load(u.urlopen('http://127.0.0.1:4891/v1/models'))['data'][0]['id'])"
        )
        out = run(["docker", "exec", name, "python", "-c", probe]).stdout.strip()
        assert out == DEFAULT_CHAT_MODEL
    finally:
        run(["docker", "rm", "-f", "-v", name], check=False)


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_dev_mode_serves_mounted_models_and_hot_reloads(image: str, tmp_path: Path) -> None:
    """docker-compose.dev.yaml: source mounted, edits reload uvicorn; a model from the
    mounted models directory is served. Runs on a copy of the project, so the edit never
    touches the working tree."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("docker-compose.yaml", "docker-compose.dev.yaml"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "gpt4all_api",
        project / "gpt4all_api",
        ignore=shutil.ignore_patterns("__pycache__", "*.gguf", "*.part", ".cache"),
    )
    (project / ".env").write_text(
        "MODEL=tiny-test-model\nEMBEDDING_MODEL=\nN_THREADS=1\nN_CTX=256\nLOG_LEVEL=info\n"
    )
    models = tmp_path / "models"
    models.mkdir()
    build_tiny_model(models / "tiny-test-model.gguf")
    models.chmod(0o755)
    (models / "tiny-test-model.gguf").chmod(0o644)

    with compose_stack(
        ["docker-compose.yaml", "docker-compose.dev.yaml"],
        project,
        build=False,
        HOST_MODELS_DIR=str(models),
    ) as stack:
        wait_healthy(stack.container())
        ids = [m["id"] for m in httpx.get(stack.base_url + "/v1/models", timeout=10).json()["data"]]
        assert "tiny-test-model" in ids, ids
        answer = openai_client(stack).completions.create(
            model="tiny-test-model", prompt="hi", max_tokens=16
        )
        assert answer.choices[0].text == "Hello, I am a tiny test model."
        assert "reloader" in stack.logs().lower()

        init = project / "gpt4all_api" / "__init__.py"
        init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9+dev-'))
        deadline = time.monotonic() + 120
        version = None
        while time.monotonic() < deadline:
            try:
                version = httpx.get(stack.base_url + "/openapi.json", timeout=5).json()["info"][
                    "version"
                ]
            except (httpx.HTTPError, ValueError):
                version = None
            if version and version.startswith("9.9.9+dev-"):
                break
            time.sleep(1)
        assert version and version.startswith("9.9.9+dev-"), (
            f"no reload after editing the source (version {version}):\n{stack.logs()[-3000:]}"
        )
