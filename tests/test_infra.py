"""Every manifest under infra/ parses, carries the fields operators rely on, and points at real files.

Core Kubernetes kinds, and every pod template inside the KubeRay resources, are validated against the
Kubernetes OpenAPI schemas with kubernetes-validate. No validator for the KubeRay CRDs is installable from
the package registries, so their fields are checked here by name.
"""
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "infra").rglob("*.yaml"))
K8S_VERSION = "1.31"
SECRET_LIKE = re.compile(r"(AKIA[0-9A-Z]{16}|secret_access_key\s*[:=]\s*[\"']?[A-Za-z0-9/+]{16,}"
                         r"|password\s*[:=]\s*\S+|://[^/\s:@]+:[^/\s@]+@)", re.I)


def documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc
                if doc["kind"] == "ConfigMap":  # a RayJob template the CronJob creates
                    for text in doc.get("data", {}).values():
                        yield path, yaml.safe_load(text)


DOCS = list(documents())
IDS = [f"{path.relative_to(ROOT)}:{doc['kind']}:{doc['metadata']['name']}" for path, doc in DOCS]


def test_the_expected_manifests_exist():
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "Role", "RoleBinding", "ServiceAccount",
            "Deployment", "Service"} <= kinds
    assert (ROOT / "infra" / "Dockerfile").exists()


@pytest.mark.parametrize("path,doc", DOCS, ids=IDS)
def test_core_kinds_and_pod_templates_match_the_kubernetes_schema(path, doc):
    if doc["apiVersion"].startswith("ray.io/"):
        for template in pod_templates(doc):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                          "template": template}, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def pod_templates(doc):
    spec = doc["spec"]
    job = spec.get("jobTemplate", spec) if doc["kind"] == "RayCronJob" else spec
    cluster = job.get("rayClusterSpec", spec if doc["kind"] == "RayCluster" else None)
    templates = [job["submitterPodTemplate"]] if "submitterPodTemplate" in job else []
    if cluster:
        templates.append(cluster["headGroupSpec"]["template"])
        templates.extend(group["template"] for group in cluster["workerGroupSpecs"])
    return templates


def ray_jobs():
    for path, doc in DOCS:
        if doc["kind"] == "RayJob":
            yield path, doc["spec"]
        elif doc["kind"] == "RayCronJob":
            yield path, doc["spec"]["jobTemplate"]


@pytest.mark.parametrize("path,job", list(ray_jobs()))
def test_ray_jobs_have_lifecycle_bounds_and_real_entrypoints(path, job):
    for field in ("entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "backoffLimit",
                  "activeDeadlineSeconds", "rayClusterSpec"):
        assert field in job, f"{path.name}: RayJob spec lacks {field}"
    assert job["shutdownAfterJobFinishes"] is True
    words = shlex.split(job["entrypoint"].replace("$(", "").replace(")", ""))
    script, config = words[1], words[words.index("--config") + 1]
    assert words[0] == "python" and (ROOT / script).is_file() and script.startswith("jobs/")
    assert (ROOT / config).is_file() and config.startswith("configs/")
    load_config(str(ROOT / config))
    if "runtimeEnvYAML" in job:
        assert isinstance(yaml.safe_load(job["runtimeEnvYAML"]), dict)


def test_raycluster_autoscales_a_gpu_worker_group():
    cluster = next(doc for _, doc in DOCS if doc["kind"] == "RayCluster")["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    group = cluster["workerGroupSpecs"][0]
    assert group["minReplicas"] < group["maxReplicas"]
    assert "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_scheduled_runs_get_a_stable_per_run_output():
    cron = next(doc for _, doc in DOCS if doc["kind"] == "RayCronJob")["spec"]
    assert cron["schedule"] and "generate.output=" in cron["jobTemplate"]["entrypoint"]
    assert "$(date -u +%Y-%m-%d)" in cron["jobTemplate"]["entrypoint"]
    cronjob = next(doc for _, doc in DOCS if doc["kind"] == "CronJob")["spec"]
    container = cronjob["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert any(e["name"] == "RUN_NAME" and "job-name" in e["valueFrom"]["fieldRef"]["fieldPath"]
               for e in container["env"])
    template = next(doc for _, doc in DOCS if doc["kind"] == "RayJob" and doc["metadata"]["name"] == "RUN_NAME")
    assert "RUN_NAME" in template["spec"]["entrypoint"]
    role = next(doc for _, doc in DOCS if doc["kind"] == "Role")
    assert {"create", "get"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == ["rayjobs"]


def test_mlflow_server_proxies_artifacts_and_reads_secrets():
    deployment = next(doc for _, doc in DOCS if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert "--artifacts-destination s3://" in command and "--allowed-hosts" in command
    assert "mlflow.mlflow.svc.cluster.local" in command
    secret_env = [e for e in container["env"] if "valueFrom" in e]
    assert {e["name"] for e in secret_env} >= {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("secretKeyRef" in e["valueFrom"] for e in secret_env)


@pytest.mark.parametrize("path", [*MANIFESTS, ROOT / "infra" / "Dockerfile", *sorted((ROOT / "configs").glob("*"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_credentials_in_infra_or_configs(path):
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert not SECRET_LIKE.search(text), SECRET_LIKE.search(text)
