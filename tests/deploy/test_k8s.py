"""deploy/k8s: every manifest valid against Kubernetes' own schemas (bundled by kubernetes-validate, strict: an
unknown field fails), probes on endpoints the app serves, non-root containers on a read-only root filesystem
with every path Atrium writes mounted, references that resolve, and settings Atrium accepts."""

from __future__ import annotations

import copy
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from atrium.gateway.local_models import LocalModelSpec, assemble_model
from atrium.http.routes.health import router as health_router
from atrium.settings import unknown_env_vars
from tests.deploy.test_dockerfile import DOCKERFILE, final_stage
from tests.deploy.tools import K8S_DIR, K8S_VERSIONS, load_documents, settings_from_env

NOT_APPLIED = {"migrate-job.yaml", "secret.example.yaml"}  # applied by hand (see their comments)
Doc = dict[str, Any]


def manifests() -> dict[str, list[Doc]]:
    return {path.name: load_documents(path) for path in sorted(K8S_DIR.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


def all_docs(files: dict[str, list[Doc]]) -> list[Doc]:
    return [doc for docs in files.values() for doc in docs]


def of_kind(files: dict[str, list[Doc]], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in all_docs(files) if doc["kind"] == kind}


def pod_specs(files: dict[str, list[Doc]]) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc["spec"]["template"]["spec"] for doc in all_docs(files)
            if doc["kind"] in ("Deployment", "Job")}


# --- schemas ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    files = manifests()
    assert {"api-deployment.yaml", "worker-deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml",
            "configmap.yaml"} <= set(files)
    for doc in all_docs(files):
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
    kinds = sorted(doc["kind"] for doc in all_docs(files))
    assert kinds.count("HorizontalPodAutoscaler") == 2 and kinds.count("PodDisruptionBudget") == 2


def test_a_broken_manifest_fails_validation() -> None:
    api = copy.deepcopy(of_kind(manifests(), "Deployment")["atrium-api"])
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo: strict mode refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(api, K8S_VERSIONS[-1], strict=True)
    api = copy.deepcopy(of_kind(manifests(), "Deployment")["atrium-api"])
    api["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, K8S_VERSIONS[0], strict=True)


# --- probes -----------------------------------------------------------------------------------------------

SERVED = {route.path for route in health_router.routes}  # type: ignore[attr-defined]


def probe_problems(pod: Doc) -> list[str]:
    container = pod["containers"][0]
    problems = []
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path or got not in SERVED:
            problems.append(f"{probe}: {got!r}, expected {path!r} (served: {sorted(SERVED)})")
            continue
        port = container.get(probe, {}).get("httpGet", {}).get("port")
        if port not in [p.get("name") for p in container.get("ports", [])] + [8000]:
            problems.append(f"{probe}: port {port!r} is not the container's")
    return problems


def test_api_probes_hit_the_health_endpoints() -> None:
    assert {"/health", "/ready"} <= SERVED
    assert probe_problems(pod_specs(manifests())["atrium-api"]) == []


def test_a_probe_on_a_missing_endpoint_is_caught() -> None:
    pod = copy.deepcopy(pod_specs(manifests())["atrium-api"])
    pod["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/healthz"
    assert len(probe_problems(pod)) == 1
    del pod["containers"][0]["livenessProbe"]
    assert len(probe_problems(pod)) == 2


# --- security ---------------------------------------------------------------------------------------------


def image_env() -> dict[str, str]:
    env = {}
    for keyword, rest in final_stage(DOCKERFILE.read_text()):
        if keyword == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def security_problems(pod: Doc, config: dict[str, str]) -> list[str]:
    problems = []
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("pod: runAsNonRoot is not true")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("pod: mounts a service-account token it does not use")
    writable = {"/tmp", image_env()["ATRIUM_DATA_DIR"], config.get("ATRIUM_MODEL_CACHE_DIR", "")}
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, context = container["name"], container.get("securityContext", {})
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root filesystem is writable")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: privilege escalation allowed")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not dropped")
        if container in pod["containers"]:
            mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            needed = writable if container["args"][0] != "migrate" else writable - {config["ATRIUM_MODEL_CACHE_DIR"]}
            problems += [f"{name}: {path} is written but not mounted" for path in sorted(needed - mounted)]
    return problems


def config_data() -> dict[str, str]:
    return of_kind(manifests(), "ConfigMap")["atrium-config"]["data"]


def test_containers_run_as_non_root_on_a_read_only_root() -> None:
    assert image_env()["ATRIUM_DATA_DIR"] == "/var/lib/atrium"
    for name, pod in pod_specs(manifests()).items():
        assert security_problems(pod, config_data()) == [], name


def test_a_writable_root_or_an_unmounted_path_is_caught() -> None:
    pod = copy.deepcopy(pod_specs(manifests())["atrium-worker"])
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["containers"][0]["volumeMounts"] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] != "tmp"]
    assert security_problems(pod, config_data()) == ["worker: the root filesystem is writable",
                                                     "worker: /tmp is written but not mounted"]


# --- references -------------------------------------------------------------------------------------------


def reference_problems(files: dict[str, list[Doc]]) -> list[str]:
    problems = []
    config_maps = of_kind(files, "ConfigMap")
    secret_keys = {name: set(doc.get("stringData", {})) | set(doc.get("data", {}))
                   for name, doc in of_kind(files, "Secret").items()}
    claims = set(of_kind(files, "PersistentVolumeClaim"))
    deployments = of_kind(files, "Deployment")
    for owner, pod in pod_specs(files).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            for source in container.get("envFrom", []):
                if source["configMapRef"]["name"] not in config_maps:
                    problems.append(f"{owner}: no ConfigMap {source['configMapRef']['name']}")
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys.get(ref["name"], set()):
                    problems.append(f"{owner}: no key {ref['key']} in Secret {ref['name']}")
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(f"{owner}: no PersistentVolumeClaim {claim}")
    for kind in ("HorizontalPodAutoscaler",):
        for name, doc in of_kind(files, kind).items():
            if doc["spec"]["scaleTargetRef"]["name"] not in deployments:
                problems.append(f"{kind} {name}: no Deployment {doc['spec']['scaleTargetRef']['name']}")
    for kind, selector_of in (("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
                              ("Service", lambda d: d["spec"]["selector"])):
        for name, doc in of_kind(files, kind).items():
            selector = selector_of(doc).items()
            if not any(selector <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()):
                problems.append(f"{kind} {name}: selects no Deployment's pods")
    return problems


def test_references_resolve() -> None:
    assert reference_problems(manifests()) == []


def test_a_dangling_reference_is_caught() -> None:
    files = copy.deepcopy(manifests())
    secret = files["secret.example.yaml"][0]
    secret["stringData"]["db-url"] = secret["stringData"].pop("database-url")
    files["service.yaml"][0]["spec"]["selector"]["app.kubernetes.io/component"] = "web"
    files["hpa.yaml"][1]["spec"]["scaleTargetRef"]["name"] = "atrium-workers"
    problems = reference_problems(files)
    assert "atrium-api: no key database-url in Secret atrium-secrets" in problems
    assert "Service atrium-api: selects no Deployment's pods" in problems
    assert "HorizontalPodAutoscaler atrium-worker: no Deployment atrium-workers" in problems


def kustomization_problems(kustomization: Doc, files: set[str]) -> list[str]:
    listed = set(kustomization.get("resources", []))
    return ([f"{name}: listed but missing" for name in sorted(listed - files)]
            + [f"{name}: not listed" for name in sorted(files - listed - NOT_APPLIED)])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization_problems(kustomization, set(manifests())) == []
    kustomization["resources"].remove("pdb.yaml")
    assert kustomization_problems(kustomization, set(manifests())) == ["pdb.yaml: not listed"]


# --- what Atrium makes of it ------------------------------------------------------------------------------


def container_env(container: Doc, secret: Doc, config: dict[str, str]) -> dict[str, str]:
    env = dict(config)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        env[var["name"]] = secret["stringData"][ref["key"]]
    return env


def test_the_environment_is_a_valid_atrium_configuration() -> None:
    files = manifests()
    secret = of_kind(files, "Secret")["atrium-secrets"]
    for name, pod in pod_specs(files).items():
        env = container_env(pod["containers"][0], secret, config_data())
        assert unknown_env_vars(env) == [], name
        settings = settings_from_env(env)
        assert not settings.is_sqlite and settings.redis_url is not None and settings.database.require_rls
        assert settings.models_dir == Path(config_data()["ATRIUM_MODEL_CACHE_DIR"])
    bad = container_env(pod_specs(files)["atrium-api"]["containers"][0], secret, config_data())
    bad["ATRIUM_JOBS__CONCURENCY"] = "2"
    assert unknown_env_vars(bad) == ["ATRIUM_JOBS__CONCURENCY"]


# --- the baked model behind a read-only root --------------------------------------------------------------


def tiny_model(tmp_path: Path) -> tuple[LocalModelSpec, Path]:
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    parts = [b"GGUF" + bytes(range(256)) * 4, b"tail" * 300]
    for n, data in enumerate(parts, 1):
        (chunks / f"part{n:02d}.bin").write_bytes(data)
    whole = b"".join(parts)
    spec = LocalModelSpec(name="tiny", file_name="tiny.gguf", package_prefix="no_such_package_part",
                          distribution_prefix="no-such-package-part", version="0", parts=len(parts),
                          sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), context_length=512,
                          default_n_ctx=512, extra="none")
    return spec, chunks


def link_command(pod: Doc, baked: Path, cache: Path) -> list[str]:
    (init,) = pod["initContainers"]
    (mount,) = init["volumeMounts"]
    command = [part.replace("/opt/atrium/models", str(baked)) for part in init["command"]]
    return [part.replace(mount["mountPath"], str(cache)) for part in command]


def test_the_init_container_links_the_baked_model_into_the_writable_cache(tmp_path: Path) -> None:
    """The image's /opt/atrium/models as the Dockerfile bakes it (the model and its sidecar, no lock file),
    linked by the manifests' own init command: Atrium then finds the model verified in the cache, with no
    chunk packages installed (as in the image) and without rewriting anything but its lock file."""
    spec, chunks = tiny_model(tmp_path)
    baked, cache = tmp_path / "baked", tmp_path / "cache"
    assemble_model(spec, baked, chunk_dir=chunks)
    for lock in baked.glob(".*.lock"):
        lock.unlink()  # the Dockerfile removes it
    cache.mkdir()
    pods = pod_specs(manifests())
    for name in ("atrium-api", "atrium-worker"):
        (mount,) = pods[name]["initContainers"][0]["volumeMounts"]
        assert mount["mountPath"] == config_data()["ATRIUM_MODEL_CACHE_DIR"]
        subprocess.run(link_command(pods[name], baked, cache), check=True, timeout=30)
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.gguf", "tiny.gguf.sha256"]
    assert assemble_model(spec, cache) == cache / "tiny.gguf"  # no chunks to assemble from: must be verified
    assert (cache / "tiny.gguf").is_symlink() and (cache / "tiny.gguf.sha256").is_symlink()


def test_without_the_links_the_model_would_be_missing(tmp_path: Path) -> None:
    spec, _ = tiny_model(tmp_path)
    from atrium.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="not installed"):
        assemble_model(spec, tmp_path / "empty-cache")
