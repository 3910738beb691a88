"""Every manifest under infra/ parses, carries the fields operators rely on, and points at real files.

Core Kubernetes kinds, and every pod template inside the KubeRay resources, are validated against the
Kubernetes OpenAPI schemas with kubernetes-validate. Every ray.io/v1 document (RayCluster, RayJob, RayCronJob,
and the RayJob template the CronJob renders) is validated with jsonschema against tests/crd_schemas/, JSON
schemas trimmed from the CRDs of the KubeRay release the manifests target (each file names its release and
sources): every ray.io-level field with its type, enum and required list, closed to unknown fields, with the
embedded pod templates left to kubernetes-validate. The rest checks by name what no schema can: lifecycle
bounds, GPU tolerations, how the Ray dashboard is protected, images that exist.
"""
import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "infra").rglob("*.yaml"))
K8S_VERSION = "1.31"
KUBERAY_RELEASE = "v1.6.2"
CRD_SCHEMAS = {path.stem: json.loads(path.read_text())
               for path in sorted((ROOT / "tests" / "crd_schemas").glob("*.json"))}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
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
                  "preRunningDeadlineSeconds", "activeDeadlineSeconds", "rayClusterSpec"):
        assert field in job, f"{path.name}: RayJob spec lacks {field}"
    assert job["shutdownAfterJobFinishes"] is True
    # The GPU cluster goes minutes after the job ends, not an hour; a run stuck before Running fails early.
    assert 0 < job["ttlSecondsAfterFinished"] <= 300
    assert 0 < job["preRunningDeadlineSeconds"] < job["activeDeadlineSeconds"]
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
    render = cronjob["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]
    assert any(e["name"] == "RUN_NAME" and "job-name" in e["valueFrom"]["fieldRef"]["fieldPath"]
               for e in render["env"])
    assert "$RUN_NAME" in render["args"][0] and "/templates/rayjob.yaml" in render["args"][0]
    template = next(doc for _, doc in DOCS if doc["kind"] == "RayJob" and doc["metadata"]["name"] == "RUN_NAME")
    assert "RUN_NAME" in template["spec"]["entrypoint"]
    role = next(doc for _, doc in DOCS if doc["kind"] == "Role")
    # kubectl apply: get and create for the first attempt, patch (a no-op) when a retry finds the RayJob.
    assert {"create", "get", "patch"} <= set(role["rules"][0]["verbs"])
    assert role["rules"][0]["resources"] == ["rayjobs"]


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


# --- KubeRay CRD schemas ------------------------------------------------------------------------------------

def _crd_registry():
    return Registry().with_resources([(schema["$id"], Resource.from_contents(schema))
                                      for schema in CRD_SCHEMAS.values()])


# int32 is the CRDs' format for every count and duration; jsonschema does not know it, so it is checked here.
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value):
    return not isinstance(value, int) or -2**31 <= value < 2**31


def crd_validator(kind):
    return jsonschema.Draft202012Validator(CRD_SCHEMAS[kind.lower()], registry=_crd_registry(), format_checker=FORMATS)


RAY_DOCS = [(path, doc) for path, doc in DOCS if doc["apiVersion"].startswith("ray.io/")]
RAY_IDS = [f"{path.relative_to(ROOT)}:{doc['kind']}:{doc['metadata']['name']}" for path, doc in RAY_DOCS]


def test_crd_schemas_are_valid_and_name_their_release_and_source():
    assert set(CRD_SCHEMAS) == {"raycluster", "rayjob", "raycronjob"}
    for name, schema in CRD_SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["x-kuberay-release"] == KUBERAY_RELEASE
        assert schema["x-source-crd"].endswith(f"ray-operator/config/crd/bases/ray.io_{name}s.yaml")
        assert "commit" in schema["$comment"] and KUBERAY_RELEASE in schema["$comment"]
    assert "RayCronJob=true" in CRD_SCHEMAS["raycronjob"]["$comment"]


@pytest.mark.parametrize("path,doc", RAY_DOCS, ids=RAY_IDS)
def test_kuberay_documents_match_the_crd_schemas(path, doc):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator(doc["kind"]).iter_errors(doc)]
    assert not errors, f"{path.name} {doc['kind']}: " + "; ".join(errors)


def _job_spec(doc):
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


def _cluster_spec(doc):
    return doc["spec"] if doc["kind"] == "RayCluster" else _job_spec(doc)["rayClusterSpec"]


def _misspell(doc):
    spec = _cluster_spec(doc)["headGroupSpec"]
    spec["rayStartParam"] = spec.pop("rayStartParams")
    return "rayStartParam"


def _wrong_type(doc):
    _cluster_spec(doc)["workerGroupSpecs"][0]["replicas"] = "4"
    return "replicas"


def _bad_enum(doc):
    _cluster_spec(doc)["authOptions"]["mode"] = "password"
    return "mode"


def _int32_overflow(doc):
    _cluster_spec(doc)["workerGroupSpecs"][0]["maxReplicas"] = 2**31
    return "maxReplicas"


def _misspell_job_field(doc):
    spec = _job_spec(doc)
    spec["shutdownAfterJobFinish"] = spec.pop("shutdownAfterJobFinishes")
    return "shutdownAfterJobFinish"


def _bad_submission_mode(doc):
    _job_spec(doc)["submissionMode"] = "SideCarMode"
    return "submissionMode"


def _missing_required(doc):
    if doc["kind"] == "RayCronJob":
        del doc["spec"]["schedule"]
        return "schedule"
    del _cluster_spec(doc)["headGroupSpec"]["template"]
    return "template"


MUTATIONS = [_misspell, _wrong_type, _bad_enum, _int32_overflow, _missing_required]
JOB_MUTATIONS = [_misspell_job_field, _bad_submission_mode]
MUTATED = [(path, doc, mutate) for path, doc in RAY_DOCS
           for mutate in MUTATIONS + (JOB_MUTATIONS if doc["kind"] != "RayCluster" else [])]


@pytest.mark.parametrize("path,doc,mutate", MUTATED,
                         ids=[f"{path.name}:{doc['kind']}:{mutate.__name__.strip('_')}"
                              for path, doc, mutate in MUTATED])
def test_crd_schemas_reject_a_misspelt_field_a_wrong_type_and_a_bad_enum(path, doc, mutate):
    validator = crd_validator(doc["kind"])
    assert validator.is_valid(doc)
    mutated = copy.deepcopy(doc)
    field = mutate(mutated)
    errors = list(validator.iter_errors(mutated))
    assert errors, f"{path.name} {doc['kind']}: the schema accepted {mutate.__name__}"
    # Rejected for the mutated field, not for something else.
    assert any(field in e.message or field in e.absolute_path for e in errors), [e.message for e in errors]


# --- what a cluster needs beyond the schema -----------------------------------------------------------------

def _worker_groups(doc):
    return _cluster_spec(doc).get("workerGroupSpecs", [])


@pytest.mark.parametrize("path,doc", RAY_DOCS, ids=RAY_IDS)
def test_gpu_worker_groups_tolerate_the_gpu_taint(path, doc):
    gpu_groups = [g for g in _worker_groups(doc)
                  if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, f"{path.name}: no GPU worker group"
    for group in gpu_groups:
        assert GPU_TOLERATION in group["template"]["spec"].get("tolerations", []), f"{path.name}: {group['groupName']}"


def _version(text):
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("path,doc", RAY_DOCS, ids=RAY_IDS)
def test_ray_dashboard_is_not_open_to_the_network(path, doc):
    cluster = _cluster_spec(doc)
    # Token authentication on every cluster (KubeRay refuses it without a rayVersion >= 2.52).
    assert cluster["authOptions"]["mode"] == "token"
    assert _version(cluster["rayVersion"]) >= (2, 52, 0)
    host = cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host")
    if doc["kind"] == "RayCluster":
        # Nothing but the head Pod itself needs it: operators use kubectl port-forward.
        assert host == "127.0.0.1"
    else:
        # The KubeRay operator polls RayJob status through the head Service in every submissionMode, so a
        # RayJob's dashboard must listen on the Pod IP; the token is what guards it.
        assert host == "0.0.0.0"
        assert _job_spec(doc)["submissionMode"] == "K8sJobMode"
    # The manifest says how an operator reaches it (directly, or by pointing at rayjob-train.yaml's notes).
    text = path.read_text()
    assert "port-forward" in text or "see rayjob-train.yaml" in text


def test_the_cronjob_is_the_default_schedule_and_the_raycronjob_is_opt_in():
    cron_path, raycron = next((path, doc) for path, doc in DOCS if doc["kind"] == "RayCronJob")
    text = cron_path.read_text()
    # Alpha behind a feature gate that is off by default: say so, and ship it suspended.
    assert "RayCronJob" in text and "--feature-gates=RayCronJob=true" in text and "cronjob-generate.yaml" in text
    assert raycron["spec"]["suspend"] is True
    cronjob = next(doc for _, doc in DOCS if doc["kind"] == "CronJob")["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["startingDeadlineSeconds"] > 0
    assert cronjob["successfulJobsHistoryLimit"] > 0 and cronjob["failedJobsHistoryLimit"] > 0
    assert 0 < cronjob["jobTemplate"]["spec"]["activeDeadlineSeconds"] <= 3600
    # Neither a RayCronJob (no concurrencyPolicy in v1.6) nor a CronJob (its Pod only creates the RayJob)
    # stops two RayJobs overlapping: a daily schedule with runs bounded well under a day does.
    assert cronjob["schedule"] == raycron["spec"]["schedule"] == "0 3 * * *"
    for _, job in ray_jobs():
        if "generate.py" in job["entrypoint"]:
            assert job["activeDeadlineSeconds"] < 24 * 3600 / 2


def test_scheduler_images_exist_and_run_without_a_shell_they_lack():
    cronjob_path, cronjob = next((path, doc) for path, doc in DOCS if doc["kind"] == "CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    images = [c["image"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert not any("bitnami" in image for image in images)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin an exact release"
    kubectl = next(c for c in pod["containers"] if "kubectl" in c["image"])
    # registry.k8s.io/kubectl: the Kubernetes project's image, immutable tags; it ships no shell.
    assert kubectl["image"].startswith("registry.k8s.io/kubectl:v")
    assert kubectl["command"] == ["kubectl"] and kubectl["args"][0] == "apply"
    assert re.search(r"image: registry\.k8s\.io/kubectl:v1\.31\.", cronjob_path.read_text())
    render = pod["initContainers"][0]
    assert render["image"].startswith("docker.io/library/busybox:")


def test_mlflow_server_image_has_the_postgres_driver_and_boto3():
    deployment = next(doc for _, doc in DOCS if doc["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/acme/cvae-synth:mlflow"
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    mlflow_stage = next(stage for stage in stages if re.match(r"\S+ AS mlflow-server\n", stage))
    for package in ("mlflow==", "psycopg2-binary", "boto3"):
        assert package in mlflow_stage, package
    assert "--target mlflow-server -t ghcr.io/acme/cvae-synth:mlflow" in dockerfile
    # The job image stays the last stage, so a build without --target still produces it.
    assert stages[-1].startswith("base-${VARIANT}") and 'pip install --no-cache-dir ".[privacy]"' in stages[-1]
