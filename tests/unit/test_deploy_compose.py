"""deploy/docker-compose.yml against the Compose Specification, offline, and against our CLIs.

The schema is the compose-spec JSON schema vendored by the ``check-jsonschema`` package
(Apache-2.0, from github.com/compose-spec/compose-spec). It is applied to the file as written
and again after ``${VAR}`` interpolation the way ``docker compose`` does it, so a variable that
expands into an invalid port or a missing secret is caught too. Where the Compose plugin is
installed, ``docker compose config`` checks the file once more.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="dev dependency check-jsonschema")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
TEST_ENV = REPO / "tests" / "docker" / "compose.test.env"
RAW = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = RAW["services"]
_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


@functools.cache
def _schema() -> dict[str, Any] | None:
    try:
        where = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        return None
    return json.loads((where / "compose-spec.json").read_text())


def _schema_validator() -> Any:
    schema = _schema()
    if schema is None:
        pytest.skip("dev dependency check-jsonschema (ships the compose-spec schema) missing")
    return jsonschema.Draft202012Validator(schema)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class MissingVariable(KeyError):
    pass


def interpolate(obj: Any, env: dict[str, str]) -> Any:
    """Interpolate like Compose: ``$$``, ``${X}``, ``${X:-d}``, ``${X-d}``, ``${X:?e}``."""
    if isinstance(obj, dict):
        return {k: interpolate(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return value if value is not None else ""

    return _VAR.sub(sub, obj)


def _variables(text: str) -> set[str]:
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}


def _parse(mod_name: str, add: str = "add_arguments") -> argparse.ArgumentParser:
    mod = importlib.import_module(mod_name)
    p = argparse.ArgumentParser(exit_on_error=False)
    getattr(mod, add)(p)
    return p


FULL_ENV = {**_env_file(ENV_EXAMPLE), "QDRANT_API_KEY": "k" * 32, "QDRANT_SIFT_TOKEN": "t" * 32}


def test_file_validates_against_the_compose_spec() -> None:
    v = _schema_validator()
    assert [e.message for e in v.iter_errors(RAW)] == []
    resolved = interpolate(RAW, FULL_ENV)
    assert [e.message for e in v.iter_errors(resolved)] == []


def test_validation_can_fail() -> None:
    v = _schema_validator()
    bad = yaml.safe_load(COMPOSE_FILE.read_text())
    bad["services"]["qdrant"]["healthcheck"]["interval"] = {"seconds": 5}
    bad["services"]["reranker"]["deploy"]["resources"]["reservations"]["devices"][0]["gpus"] = 1
    assert len(list(v.iter_errors(bad))) >= 2


def test_secrets_are_required_never_defaulted() -> None:
    for secret in ("QDRANT_API_KEY", "QDRANT_SIFT_TOKEN"):
        env = {k: v for k, v in FULL_ENV.items() if k != secret}
        with pytest.raises(MissingVariable, match=secret):
            interpolate(RAW, env)
        with pytest.raises(MissingVariable, match=secret):
            interpolate(RAW, {**env, secret: ""})  # ":?" also refuses an empty value
    example = _env_file(ENV_EXAMPLE)
    assert example["QDRANT_API_KEY"] == "" and example["QDRANT_SIFT_TOKEN"] == ""


def test_every_variable_is_documented() -> None:
    used = _variables(COMPOSE_FILE.read_text())
    assert used <= set(_env_file(ENV_EXAMPLE)), used - set(_env_file(ENV_EXAMPLE))


def test_test_env_file_satisfies_the_file() -> None:
    """The env file the docker tests pass with --env-file resolves every variable."""
    env = _env_file(TEST_ENV)
    resolved = interpolate(RAW, env)
    assert [e.message for e in _schema_validator().iter_errors(resolved)] == []
    ports = resolved["services"]["qdrant"]["ports"]
    assert ports == ["127.0.0.1:0:6333", "127.0.0.1:0:6334"]  # Docker picks free host ports


def test_qdrant_is_pinned_persistent_and_keyed() -> None:
    q = SERVICES["qdrant"]
    name, tag = q["image"].split(":")
    assert name == "qdrant/qdrant" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    assert q["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY:?")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in q["volumes"]}
    assert set(mounts) == {"/qdrant/storage", "/qdrant/snapshots"}
    assert set(mounts.values()) <= set(RAW["volumes"])
    assert "/readyz" in q["healthcheck"]["test"][-1]
    resolved = interpolate(q, FULL_ENV)
    assert all(p.startswith("127.0.0.1:") for p in resolved["ports"])  # loopback by default
    assert "profiles" not in q  # `up` without profiles starts Qdrant alone


@pytest.mark.parametrize(("service", "device"), [("reranker", "cuda"), ("reranker-cpu", "cpu")])
def test_rerankers(service: str, device: str) -> None:
    s = SERVICES[service]
    args = _parse("qdrant_sift.reranker._cmd_serve").parse_args(
        interpolate(s["command"], FULL_ENV)[1:]
    )
    assert s["command"][0] == "serve"
    assert args.device == device
    assert args.max_workers == 8 and args.max_concurrent_rpcs == 64
    containers = {p.rsplit(":", 1)[1] for p in s["ports"]}
    assert args.http_port is not None  # the Cohere/TEI endpoints
    assert containers == {str(args.port), str(args.http_port), str(args.metrics_port)}
    resolved = interpolate(s["ports"], FULL_ENV)
    assert all(p.startswith("127.0.0.1:") for p in resolved)  # loopback by default
    assert args.health_port not in (None, args.port)  # the image's health check asks it
    env = s["environment"]
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    assert env["QDRANT_SIFT_TOKEN"].startswith("${QDRANT_SIFT_TOKEN:?")
    assert s["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
    assert (COMPOSE_FILE.parent / s["build"]["context"] / "pyproject.toml").is_file()
    dockerfile = COMPOSE_FILE.parent / s["build"]["context"] / s["build"]["dockerfile"]
    assert re.search(rf"^FROM .* AS {s['build']['target']}$", dockerfile.read_text(), re.M)
    assert s["image"].endswith(f"-{device}")
    devices = s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    if device == "cuda":
        assert s["profiles"] == ["gpu"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    else:
        assert s["profiles"] == ["cpu"]
        assert devices is None


def test_ingest_example() -> None:
    init, ingest = SERVICES["collection-init"], SERVICES["ingest"]
    assert init["profiles"] == ingest["profiles"] == ["ingest"]
    assert ingest["depends_on"] == {
        "collection-init": {"condition": "service_completed_successfully"}
    }
    assert init["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert init["entrypoint"] == ["python", "/app/create_collection.py"]
    spec = importlib.util.spec_from_file_location("cc", DEPLOY / "create_collection.py")
    assert spec and spec.loader
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    ns = cc.build_parser().parse_args(interpolate(init["command"], FULL_ENV))
    assert ns.collection == "docs" and ns.dim == 384
    cmd = interpolate(ingest["command"], FULL_ENV)
    assert cmd[:2] == ["ingest", "/data"]
    assert {"--store=qdrant", "--url=http://qdrant:6333", "--collection=docs"} <= set(cmd)
    assert ingest["volumes"][0].endswith(":/data:ro")
    assert ingest["build"]["target"] == "ingest"
    from qdrant_sift.client import cli

    cli.build_parser().parse_args(cmd)  # `qdrant-sift ingest` parses the service's command


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed")
    out = subprocess.run(
        [docker, "compose", "--env-file", str(TEST_ENV), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
