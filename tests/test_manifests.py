"""cluster/: every KubeRay manifest validates against the KubeRay v1.7.0 JSON schemas in
../shared/schemas, plus the rules the schemas cannot express (KubeRay checks them at
admission): submissionMode values, worker groups' min/max replicas, `nvidia.com/gpu`
in GPU containers' limits, the image's and rayVersion's Ray version equal to the pinned
one, and entrypoints that name files in this repo. Deliberately broken copies must fail."""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(os.environ.get("RAYSYS_SHARED_SCHEMAS", ROOT.parent / "shared" / "schemas")) / "kuberay-v1.7.0"
MANIFESTS = sorted((ROOT / "cluster").glob("ray*.yaml"))
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
IMAGE_DIR = "/home/ray/raysys/"  # where cluster/Dockerfile puts the repo


def pinned_ray() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.startswith("ray=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("constraints.txt pins no ray version")


def schema(kind: str) -> dict:
    path = SCHEMAS / {"RayCluster": "raycluster_v1.json", "RayJob": "rayjob_v1.json"}[kind]
    if not path.is_file():  # skipped on a developer's machine without them; CI fails loudly
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"KubeRay schemas not found at {SCHEMAS}")
    return json.loads(path.read_text())


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def rule_errors(doc: dict) -> list[str]:
    """What KubeRay's admission checks would refuse, and raysys's own pins."""
    errors = []
    ray = pinned_ray()
    spec = cluster_spec(doc)
    if spec.get("rayVersion") != ray:
        errors.append(f"rayVersion {spec.get('rayVersion')!r} is not the pinned {ray}")
    groups = [("head", spec["headGroupSpec"])] + [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    for name, group in groups:
        for c in group["template"]["spec"]["containers"]:
            tag = re.search(r"ray(\d+\.\d+\.\d+)$", c["image"])
            if not tag or tag.group(1) != ray:
                errors.append(f"{name}: image {c['image']!r} is not tagged with the pinned Ray {ray}")
            limits = c.get("resources", {}).get("limits", {})
            requests = c.get("resources", {}).get("requests", {})
            wants_gpu = "gpu" in name.lower() or "nvidia.com/gpu" in requests
            if wants_gpu and "nvidia.com/gpu" not in limits:
                errors.append(f"{name}: a GPU group's container must set nvidia.com/gpu in limits")
        if name != "head" and ("minReplicas" not in group or "maxReplicas" not in group):
            errors.append(f"{name}: minReplicas and maxReplicas are required")
        elif name != "head" and group["minReplicas"] > group["maxReplicas"]:
            errors.append(f"{name}: minReplicas > maxReplicas")
    if doc["kind"] == "RayJob":
        job = doc["spec"]
        if job.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
            errors.append(f"submissionMode {job['submissionMode']!r} is not one of {SUBMISSION_MODES}")
        for token in job["entrypoint"].split():
            if token.startswith(IMAGE_DIR) and not (ROOT / token[len(IMAGE_DIR):]).is_file():
                errors.append(f"entrypoint names {token}, which is not in the repo")
        if not job.get("shutdownAfterJobFinishes") or "ttlSecondsAfterFinished" not in job:
            errors.append("a job's cluster must shut down after it (shutdownAfterJobFinishes, ttlSecondsAfterFinished)")
    return errors


def schema_errors(doc: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema(doc["kind"]))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_manifests_are_all_there():
    names = {p.name for p in MANIFESTS}
    assert {"raycluster.yaml", "rayjob-score.yaml", "rayjob-loop.yaml", "rayjob-train-llama7b.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert schema_errors(doc) == []
    assert rule_errors(doc) == []


def test_entrypoints_name_the_job_scripts_and_configs():
    seen = set()
    for path in MANIFESTS:
        doc = load(path)
        if doc["kind"] == "RayJob":
            seen.update(t[len(IMAGE_DIR):] for t in doc["spec"]["entrypoint"].split() if t.startswith(IMAGE_DIR))
    assert {"jobs/score.py", "jobs/loop.py", "jobs/train.py"} <= seen
    assert all((ROOT / s).is_file() for s in seen)


def test_dockerfile_builds_on_the_pinned_ray_image():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-", text, re.M)
    assert base and base.group(1) == pinned_ray()
    for copied in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name


def _broken(path: str, edit) -> dict:
    doc = copy.deepcopy(load(ROOT / "cluster" / path))
    edit(doc)
    return doc


@pytest.mark.parametrize("path, edit, where, message", [
    # a misspelt field: the schema forbids unknown keys in the spec
    ("rayjob-loop.yaml", lambda d: d["spec"].update(shutdownAfterJobFinish=d["spec"].pop("shutdownAfterJobFinishes")),
     "schema", "shutdownAfterJobFinish"),
    ("raycluster.yaml", lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplica=1), "schema", "maxReplica"),
    ("raycluster.yaml", lambda d: d["spec"]["workerGroupSpecs"][0].pop("minReplicas"), "schema", "minReplicas"),
    ("rayjob-score.yaml", lambda d: d["spec"].update(entrypointNumCpus="one"), "schema", "entrypointNumCpus"),
    # what only the rules catch
    ("raycluster.yaml", lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "limits"].pop("nvidia.com/gpu"), "rules", "nvidia.com/gpu in limits"),
    ("rayjob-loop.yaml", lambda d: d["spec"].update(submissionMode="K8sMode"), "rules", "submissionMode"),
    ("rayjob-train-llama7b.yaml", lambda d: d["spec"]["rayClusterSpec"].update(rayVersion="2.59.0"), "rules",
     "rayVersion"),
    ("rayjob-score.yaml", lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .update(image="REGISTRY/raysys:0.1.0-ray2.59.0"), "rules", "not tagged"),
    ("rayjob-score.yaml", lambda d: d["spec"].update(entrypoint="python /home/ray/raysys/jobs/scor.py --x 1"), "rules",
     "not in the repo"),
    ("rayjob-loop.yaml", lambda d: d["spec"].pop("ttlSecondsAfterFinished"), "rules", "shut down"),
])
def test_a_broken_copy_fails(path, edit, where, message):
    doc = _broken(path, edit)
    errors = schema_errors(doc) if where == "schema" else rule_errors(doc)
    assert any(message in e for e in errors), errors
    if where == "rules":
        assert schema_errors(doc) == []  # the schema alone would let it through
