"""Kubernetes manifests and the Qdrant Helm values: schema-valid offline, and consistent.

Every object validates strictly (unknown fields rejected) against the Kubernetes OpenAPI
schemas that ``kubernetes-validate`` ships, for the oldest version we support (1.30: native
gRPC probes GA in 1.27, ``preStop.sleep`` from 1.30) and the newest it knows. The rest checks
what a schema cannot: names, labels, ports and keys that must agree across files, and that the
reranker's arguments parse with the real ``serve`` parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate", reason="dev dependency kubernetes-validate")
from kubernetes_validate.utils import ValidationError, latest_version, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
HELM_VALUES = REPO / "deploy" / "helm" / "qdrant-values.yaml"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
VERSIONS = ("1.30.0", latest_version())

#: Top-level keys of the official chart's values.yaml (qdrant-helm, charts/qdrant, 1.16+).
#: A key outside this set is a typo the chart would silently ignore.
CHART_KEYS = {
    "replicaCount", "image", "imagePullSecrets", "nameOverride", "fullnameOverride", "args",
    "env", "service", "ingress", "livenessProbe", "readinessProbe", "startupProbe",
    "additionalLabels", "podAnnotations", "podLabels", "resources", "containerSecurityContext",
    "podSecurityContext", "lifecycle", "updateVolumeFsOwnership", "nodeSelector", "tolerations",
    "affinity", "topologySpreadConstraints", "persistence", "snapshotPersistence",
    "snapshotRestoration", "config", "sidecarContainers", "metrics", "serviceAccount",
    "priorityClassName", "shareProcessNamespace", "podManagementPolicy", "podDisruptionBudget",
    "apiKey", "readOnlyApiKey", "additionalVolumes", "additionalVolumeMounts",
}  # fmt: skip


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in _manifests():
        for doc in _docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


OBJ = _objects()
DEPLOY = OBJ[("Deployment", "qdrant-sift-reranker")]
POD = DEPLOY["spec"]["template"]
CONTAINER = POD["spec"]["containers"][0]
CONFIG = OBJ[("ConfigMap", "qdrant-sift-config")]["data"]
SECRET_KEYS = {
    line.split("=", 1)[0]
    for line in (K8S / "secret.env.example").read_text().splitlines()
    if line and not line.startswith("#")
}
HELM = yaml.safe_load(HELM_VALUES.read_text())


def _serve_parser() -> argparse.ArgumentParser:
    from qdrant_sift.reranker import _cmd_serve

    parser = argparse.ArgumentParser(prog="serve", exit_on_error=False)
    _cmd_serve.add_arguments(parser)
    return parser


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path: Path, version: str) -> None:
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        validate(doc, version, strict=True)


def test_validation_can_fail() -> None:
    broken = yaml.safe_load(yaml.safe_dump(DEPLOY))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        validate(broken, VERSIONS[-1], strict=True)
    typo = yaml.safe_load(yaml.safe_dump(DEPLOY))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValidationError):
        validate(typo, VERSIONS[-1], strict=True)


def test_every_manifest_is_in_a_kustomization() -> None:
    listed: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        for res in k["resources"]:
            assert (kfile.parent / res).is_file(), f"{kfile}: missing {res}"
            listed.add((kfile.parent / res).resolve())
    assert {p.resolve() for p in _manifests()} == listed


def test_kustomize_renders_valid_objects(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize rendering not checked")
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    (work / "secret.env").write_text("".join(f"{k}=test-{k.lower()}\n" for k in SECRET_KEYS))
    rendered: list[dict[str, Any]] = []
    for folder in (work, work / "jobs"):
        out = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        rendered += [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in rendered:
        validate(doc, VERSIONS[-1], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "qdrant-sift", doc["metadata"]["name"]
    secret = next(d for d in rendered if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "qdrant-sift-secrets"  # fixed name: Helm reads it too
    assert set(secret["data"]) == SECRET_KEYS
    images = {
        c["image"]
        for d in rendered
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all("/" in i and ":" in i for i in images), images  # registry + pinned tag


def test_reranker_pod_is_hardened() -> None:
    spec = POD["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    sc = CONTAINER["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert "/tmp" in mounts and CONFIG["HOME"].startswith("/tmp")


def test_reranker_gets_a_gpu_and_bounded_resources() -> None:
    res = CONTAINER["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
    assert "cpu" in res["requests"]  # the HPA's utilisation target needs it
    assert "memory" in res["limits"]
    assert any(t["key"] == "nvidia.com/gpu" for t in POD["spec"]["tolerations"])


def test_probes_ask_http_health_and_ready() -> None:
    args = _serve_parser().parse_args(CONTAINER["args"][1:])
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports == {
        "grpc": args.port,
        "http": args.http_port,
        "metrics": args.metrics_port,
        "health": args.health_port,
    }
    assert len(set(ports.values())) == 4
    # /health (live once the embedder is loaded) and /ready (503 from SIGTERM on) are the HTTP
    # server's probe routes: open without the token and outside the in-flight limit.
    from qdrant_sift.reranker._http import PROBE_PATHS

    want = {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in want.items():
        get = CONTAINER[probe]["httpGet"]
        assert get == {"path": path, "port": "http"}, probe
        assert path in PROBE_PATHS
    # the gRPC health port stays for Docker's HEALTHCHECK and gRPC-aware balancers
    assert args.health_port not in (None, args.port)
    grace = POD["spec"]["terminationGracePeriodSeconds"]
    pre_stop = CONTAINER["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert grace > pre_stop + args.grace, "the drain must finish before SIGKILL"
    start = CONTAINER["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 60, "room to load the embedder"


def test_reranker_args_parse_with_the_real_serve_cli() -> None:
    assert CONTAINER["args"][0] == "serve"
    args = _serve_parser().parse_args(CONTAINER["args"][1:])
    assert args.device == "cuda"
    assert args.host == "0.0.0.0"
    assert args.max_concurrent_rpcs >= args.max_workers


def test_reranker_environment_comes_from_configmap_and_secret() -> None:
    assert CONTAINER["envFrom"] == [{"configMapRef": {"name": "qdrant-sift-config"}}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in CONTAINER["env"]}
    assert set(refs) == {"QDRANT_SIFT_TOKEN", "QDRANT_API_KEY"}
    for name, ref in refs.items():
        assert ref == {"name": "qdrant-sift-secrets", "key": name}
    assert set(refs) == SECRET_KEYS
    assert CONFIG["QDRANT_URL"] == f"http://{HELM['fullnameOverride']}:6333"


def test_service_pdb_hpa_target_the_deployment() -> None:
    pod_labels = POD["metadata"]["labels"]
    assert DEPLOY["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for p in CONTAINER["ports"]}
    for name in ("qdrant-sift-reranker", "qdrant-sift-reranker-headless"):
        svc = OBJ[("Service", name)]["spec"]
        assert svc["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in svc["ports"]} <= port_names
    assert OBJ[("Service", "qdrant-sift-reranker-headless")]["spec"]["clusterIP"] == "None"
    svc_ports = {p["name"]: p for p in OBJ[("Service", "qdrant-sift-reranker")]["spec"]["ports"]}
    assert svc_ports["http"]["targetPort"] == "http" and svc_ports["http"]["port"] == 8080
    assert svc_ports["http"]["appProtocol"] == "http"
    pdb = OBJ[("PodDisruptionBudget", "qdrant-sift-reranker")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = OBJ[("HorizontalPodAutoscaler", "qdrant-sift-reranker")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "qdrant-sift-reranker",
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    # A PDB allowing one disruption with a floor of two replicas keeps one serving.
    assert pdb["maxUnavailable"] == 1 and DEPLOY["spec"]["replicas"] >= 2


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def test_network_policies_connect_exactly_the_right_pods() -> None:
    pols = [d["spec"] for (kind, _), d in OBJ.items() if kind == "NetworkPolicy"]
    assert any(p["podSelector"] == {} and p["policyTypes"] == ["Ingress"] for p in pols)
    qdrant_labels = {"app.kubernetes.io/name": "qdrant"}  # the chart's selector label
    assert (
        HELM["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
            "labelSelector"
        ]["matchLabels"]
        == qdrant_labels
    )
    reranker_labels = POD["metadata"]["labels"]

    def allowed(to_labels: dict[str, str], from_labels: dict[str, str], port: int) -> bool:
        for p in pols:
            if "ingress" not in p or not _selects(p["podSelector"], to_labels):
                continue
            for rule in p["ingress"]:
                ok_port = any(q["port"] == port for q in rule["ports"])
                ok_peer = any(
                    "podSelector" in peer
                    and "namespaceSelector" not in peer
                    and _selects(peer["podSelector"], from_labels)
                    for peer in rule["from"]
                )
                if ok_port and ok_peer:
                    return True
        return False

    client = {"qdrant-sift/reranker-client": "true"}
    http_port = next(p["containerPort"] for p in CONTAINER["ports"] if p["name"] == "http")
    for port in (50051, http_port):
        assert allowed(reranker_labels, client, port)
        assert not allowed(reranker_labels, {"app": "anything"}, port)
    assert allowed(qdrant_labels, reranker_labels, 6333)
    assert allowed(qdrant_labels, qdrant_labels, 6335)  # cluster peers
    assert not allowed(qdrant_labels, client, 6333)  # reranker clients do not reach Qdrant
    for (kind, _), job in OBJ.items():
        if kind == "Job":
            assert allowed(qdrant_labels, job["spec"]["template"]["metadata"]["labels"], 6333)


def test_jobs_use_configmap_keys_and_secret() -> None:
    for (kind, name), job in OBJ.items():
        if kind != "Job":
            continue
        c = job["spec"]["template"]["spec"]["containers"][0]
        text = " ".join(c.get("args", []) + c.get("command", []))
        for var in re.findall(r"\$\((\w+)\)", text):
            assert var in CONFIG, f"{name}: $({var}) is not in the ConfigMap"
        assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "qdrant-sift-secrets"
        assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def _expand(arg: str) -> str:
    """Expand ``$(VAR)`` from the ConfigMap, as the kubelet does for args."""
    return re.sub(r"\$\((\w+)\)", lambda m: CONFIG[m.group(1)], arg)


def test_collection_init_matches_the_cluster() -> None:
    job = OBJ[("Job", "qdrant-sift-collection-init")]["spec"]["template"]["spec"]
    spec = importlib.util.spec_from_file_location("cc", REPO / "deploy" / "create_collection.py")
    assert spec and spec.loader
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    ns = cc.build_parser().parse_args([_expand(a) for a in job["containers"][0]["args"]])
    nodes = HELM["replicaCount"]
    assert ns.replication_factor == 2 <= nodes
    assert ns.shard_number % nodes == 0, "shards must spread evenly over the nodes"
    assert ns.dim == 384  # all-MiniLM-L6-v2
    assert ns.write_consistency_factor <= ns.replication_factor


def test_helm_values_describe_a_replicated_cluster() -> None:
    assert set(HELM) <= CHART_KEYS, set(HELM) - CHART_KEYS
    assert HELM["replicaCount"] == 3
    assert HELM["config"]["cluster"]["enabled"] is True
    assert HELM["config"]["cluster"]["p2p"]["port"] == 6335
    assert HELM["persistence"]["size"].endswith("Gi")
    assert HELM["snapshotPersistence"]["enabled"] is True
    assert HELM["podDisruptionBudget"] == {"enabled": True, "maxUnavailable": 1}
    ref = HELM["apiKey"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "qdrant-sift-secrets", "key": "QDRANT_API_KEY"}
    assert ref["key"] in SECRET_KEYS
    assert HELM["containerSecurityContext"]["runAsNonRoot"] is True


def test_helm_and_compose_pin_the_same_qdrant() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    image = compose["services"]["qdrant"]["image"]
    repo, tag = image.rsplit(":", 1)
    assert HELM["image"]["tag"] == tag
    assert HELM["image"]["repository"].endswith(repo)
    assert tag.startswith("v") and tag[1:].replace(".", "").isdigit()


def test_readme_commands_match_the_files() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    assert f"--version {HELM['image']['tag'].lstrip('v')}" in readme  # chart follows app version
    assert f"shard_number={CONFIG['QDRANT_SIFT_SHARDS']}" in readme
    assert f"replication_factor={CONFIG['QDRANT_SIFT_REPLICATION']}" in readme
    for path in [*_manifests(), HELM_VALUES, COMPOSE]:
        assert path.relative_to(REPO / "deploy").parts[0] in readme, path
