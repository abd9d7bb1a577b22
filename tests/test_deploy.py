"""compose.yaml: valid under the Compose specification, vLLM launched as VLLM.md says, nothing exposed.

No Docker engine runs here, so the file is checked, not started: against the Compose
specification's JSON schema (docker-compose 1.29.2's copy, fetched by `make setup`), and rule by
rule against what ../shared/design/VLLM.md and the deployment section of the README promise.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, SHARED

SCHEMA = REPO / ".venv" / "share" / "compose-spec" / "compose" / "config" / "compose_spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    import jsonschema

    assert SCHEMA.exists(), "the Compose schema is fetched by `make setup`"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    assert set(compose["services"]) >= {"postgres", "redis", "qdrant", "vllm", "web", "worker", "migrate"}


def launch_flags() -> dict[str, str]:
    """The flags of VLLM.md's `vllm serve` launch block, flag -> value ("" for a switch)."""
    text = (SHARED / "design" / "VLLM.md").read_text()
    block = re.search(r"```\n(vllm serve .*?)```", text, re.S)
    assert block is not None
    words = shlex.split(block.group(1).replace("\\\n", " "))
    flags: dict[str, str] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            following = words[i + 1] if i + 1 < len(words) else ""
            flags[word] = "" if following.startswith("--") or not following else following
    return flags


def test_vllm_is_launched_as_the_serving_contract_says(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    command = [str(c) for c in vllm["command"]]
    assert command[0] == "openai/gpt-oss-120b" and "vllm serve" in " ".join(vllm["entrypoint"])
    given: dict[str, str] = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            following = command[i + 1] if i + 1 < len(command) else ""
            given[word] = "" if following.startswith("--") or not following else following
    for flag, value in launch_flags().items():
        if flag == "--api-key":  # from the secret, exported as VLLM_API_KEY (read by vLLM), never empty
            script = vllm["entrypoint"][-1]
            assert 'export VLLM_API_KEY="$$(cat /run/secrets/vllm_api_key)"' in script and "vllm_api_key" in vllm["secrets"]
            assert 'test -n "$$VLLM_API_KEY"' in script and script.endswith('exec vllm serve "$$0" "$$@"')
        elif flag == "--tensor-parallel-size":  # 1 on an H200; 2 for two H100s
            assert given[flag] == "${VLLM_TENSOR_PARALLEL:-1}"
        else:
            assert given.get(flag) == value, (flag, given.get(flag), value)
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", vllm["image"])  # a pinned tag, never latest
    assert vllm["ipc"] == "host"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    env = vllm["environment"]
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1" and env["TIKTOKEN_ENCODINGS_BASE"]
    mounts = " ".join(vllm["volumes"])
    assert "/root/.cache/huggingface" in mounts and "/root/.cache/vllm" in mounts
    assert f":{env['TIKTOKEN_ENCODINGS_BASE']}:ro" in mounts
    assert int(vllm["healthcheck"]["start_period"].rstrip("s")) >= 1200  # cold starts take many minutes
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in strings(k) + strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_dollar_is_an_escape_or_a_compose_variable(compose: dict[str, Any]) -> None:
    """Compose reads `$x` and `$(...)` as its own interpolation: a shell's `$` must be written `$$`."""
    variable = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(?::?[-?][^}]*)?\}")
    bare = [t for t in strings(compose) if "$" in variable.sub("", t.replace("$$", ""))]
    assert bare == []


def test_services_come_up_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "qdrant", "vllm", "web"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    web = services["web"]["depends_on"]
    assert web["migrate"] == {"condition": "service_completed_successfully"}
    assert all(web[s] == {"condition": "service_healthy"} for s in ("redis", "qdrant", "vllm"))
    assert services["worker"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["restart"] == "no" and "migrate" in services["migrate"]["command"]
    assert "gunicorn" in services["web"]["command"] and "celery" in services["worker"]["command"]
    assert "container_name" not in services["worker"]  # `--scale worker=N` needs unnamed containers


def test_nothing_is_exposed_and_nothing_phones_home(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert list(published) == ["web"]
    assert all(str(p).startswith("127.0.0.1:") for p in published["web"])
    assert compose["networks"]["backend"]["internal"] is True
    for name, service in services.items():
        networks = service.get("networks", [])
        if name == "fetch-model":  # the one deliberate download, run by hand
            assert service["profiles"] == ["fetch"] and networks == ["egress"]
        elif name == "web":
            assert sorted(networks) == ["backend", "frontend"]
        else:
            assert networks == ["backend"], name
    assert services["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert "QDRANT__SERVICE__API_KEY" in services["qdrant"]["entrypoint"][-1]
    web_env = services["web"]["environment"]
    assert web_env["DO_NOT_TRACK"] == "1" and web_env["HF_HUB_OFFLINE"] == "1"


def test_secrets_come_from_files(compose: dict[str, Any]) -> None:
    env = compose["services"]["web"]["environment"]
    for key in ("DATABASE_PASSWORD", "QDRANT_API_KEY", "LLM_API_KEY", "SECRET_KEY"):
        assert env[f"DOCQA_{key}_FILE"].startswith("/run/secrets/"), key
        assert f"DOCQA_{key}" not in env  # never the value itself
    assert all(not str(v).startswith("/") or "secrets" in str(v) for v in compose["secrets"].values())
    text = (REPO / "compose.yaml").read_text()
    assert not re.search(r"(?i)(password|api_key|secret_key)\s*:\s*[\"']?\w{8,}", text)  # no literal secret


def test_the_image_holds_everything_the_app_needs_and_runs_unprivileged() -> None:
    """No engine here to build it: the Dockerfile is read against the project it must package."""
    import tomllib

    text = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+)", text, re.M))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied and {"templates", "manage.py", "pyproject.toml"} <= copied
    torch = next(d for d in project["project"]["dependencies"] if d.startswith("torch=="))
    assert f"pip install {torch} --index-url" in text  # the CPU build first: no CUDA wheels pulled in
    assert "unstructured-inference==1.6.14" in text and "--no-deps" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)  # gunicorn and celery never run as root
    assert "DOCQA_SECRET_KEY=build-only" in text  # collectstatic writes no key into the image
    assert "tesseract-ocr" in text and "HF_HUB_OFFLINE=1" in text and "DO_NOT_TRACK=1" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git", "secrets"} <= set(ignored)  # no local state or secrets in the build context
