"""Shared fixtures for tests that need a Docker engine (pytest-docker + deploy/docker-compose.yml).

Every test under tests/docker is marked ``docker`` and skipped, with the reason, where no
Docker engine answers or the Compose plugin is missing; nothing here runs on such a machine.

For store tests: ``qdrant_url`` and ``qdrant_api_key`` start the compose service ``qdrant``
alone (pytest-docker's ``docker_services``, one project per session, ``down -v`` at the end).
For whole-stack tests: ``make_compose_project`` makes :class:`ComposeProject` objects of their
own, so their profiles and volumes never mix with the store tests' project.
Both pass tests/docker/compose.test.env (throwaway secrets, loopback, free host ports).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

__all__ = ["COMPOSE_FILE", "TEST_ENV_FILE", "ComposeProject", "docker_unavailable_reason"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
TEST_ENV_FILE = HERE / "compose.test.env"


@functools.cache
def docker_unavailable_reason() -> str | None:
    """None where `docker info` and `docker compose version` both work, else why not."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info`: {last})"
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode != 0:
        return "the Docker Compose v2 plugin (`docker compose`) is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not mine:
        return
    reason = docker_unavailable_reason()
    for item in mine:
        item.add_marker(pytest.mark.docker)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs Docker: {reason}"))


def read_env_file(path: Path = TEST_ENV_FILE) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class ComposeProject:
    """`docker compose` on deploy/docker-compose.yml under a project name of its own."""

    def __init__(
        self,
        name: str,
        *,
        profiles: Sequence[str] = (),
        env: dict[str, str] | None = None,
        env_file: Path = TEST_ENV_FILE,
    ) -> None:
        self.name = name
        self.base = ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
        self.base += ["-p", name]
        for profile in profiles:
            self.base += ["--profile", profile]
        self.env = {**os.environ, **(env or {})}

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        out = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {out.returncode}\n"
                f"--- stdout\n{out.stdout[-4000:]}\n--- stderr\n{out.stderr[-4000:]}"
            )
        return out.stdout

    def port(self, service: str, container_port: int) -> int:
        """The host port Docker picked for a container port (the env file asks for port 0)."""
        endpoint = self.run("port", service, str(container_port), timeout=60).strip()
        return int(endpoint.splitlines()[-1].rsplit(":", 1)[1])

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "200", timeout=120, check=False)

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", timeout=300, check=False)


def wait_for_http(url: str, timeout: float = 120.0) -> None:
    """Poll until ``url`` answers 200 (Qdrant's /readyz needs no API key)."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


# --- pytest-docker overrides: the store tests' Qdrant ----------------------------------------


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return f'docker compose --env-file "{TEST_ENV_FILE}"'


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"qdrant-sift-test-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Qdrant alone (the reranker and the jobs sit behind profiles); --wait: until healthy.
    return ["up -d --wait qdrant"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v --remove-orphans"]


@pytest.fixture(scope="session")
def qdrant_api_key() -> str:
    return read_env_file()["QDRANT_API_KEY"]


@pytest.fixture(scope="session")
def qdrant_url(docker_services: object, docker_ip: str) -> str:
    """URL of the compose stack's Qdrant (REST, port 6333), ready to serve."""
    port = docker_services.port_for("qdrant", 6333)  # type: ignore[attr-defined]
    url = f"http://{docker_ip}:{port}"
    wait_for_http(f"{url}/readyz")
    return url


@pytest.fixture(scope="session")
def qdrant_grpc_port(docker_services: object, qdrant_url: str) -> int:
    return int(docker_services.port_for("qdrant", 6334))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def make_compose_project(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., ComposeProject]]:
    """Factory of throwaway projects named after the test module, torn down with their volumes.

    ``make_compose_project(profiles=("cpu",), env={"INGEST_DIR": ...})``
    """
    stem = Path(str(request.path)).stem.replace("_", "-")
    made: list[ComposeProject] = []

    def make(profiles: Sequence[str] = (), env: dict[str, str] | None = None) -> ComposeProject:
        project = ComposeProject(
            f"qsift-{stem}-{os.getpid()}-{len(made)}", profiles=profiles, env=env
        )
        made.append(project)
        return project

    yield make
    for project in made:
        project.down()
