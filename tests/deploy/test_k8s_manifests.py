"""Static checks of the Kubernetes manifests in deploy/k8s and the alert rules.

Manifests are validated with ``kubernetes-validate`` (JSON schemas shipped in its wheel,
strict: unknown fields fail) and, where ``kubectl`` is at hand, rendered with its
built-in kustomize. Optional validators that are missing make their tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from pipeline.cli.backfill_cmd import REJECTED_EXIT_CODE
from pipeline.config.validation import validate_document
from tests.deploy.deploy_files import (
    K8S,
    KUBERNETES_VERSION,
    OUTSIDE_KUSTOMIZATIONS,
    RULES_FILE,
    checkpoint_of,
    containers,
    drain_timeout_seconds,
    holding_mount,
    k8s_documents,
    kustomization_files,
    manifest_files,
    settings_configmap,
    settings_env_names,
    workload,
    yaml,
)

METRICS = {
    "sfamp_events_ingested_total",
    "sfamp_replay_id_age_seconds",
    "sfamp_consumer_lag_messages",
    "sfamp_pending_groups",
    "sfamp_flush_duration_seconds_bucket",
    "sfamp_flush_duration_seconds_sum",
    "sfamp_flush_duration_seconds_count",
    "sfamp_flush_groups",
    "sfamp_amplitude_requests_total",
    "sfamp_amplitude_key_refused",
    "sfamp_dlq_messages_total",
    "sfamp_last_successful_flush_timestamp_seconds",
    "sfamp_kafka_unreachable",
    "sfamp_resyncs_total",
    "sfamp_reconcile_runs_total",
    "sfamp_reconcile_last_success_timestamp_seconds",
}

# ---------------------------------------------------------------- Kubernetes


def test_kustomizations_list_existing_files_and_every_manifest() -> None:
    listed: set[Path] = set()
    for kustomization in kustomization_files():
        document = yaml.safe_load(kustomization.read_text())
        assert document["kind"] == "Kustomization"
        for resource in document["resources"]:
            path = (kustomization.parent / resource).resolve()
            assert path.is_file(), f"{kustomization}: {resource} does not exist"
            assert kustomization.parent in path.parents, "kustomize refuses files above it"
            listed.add(path)
    assert set(manifest_files()) - listed == OUTSIDE_KUSTOMIZATIONS


@pytest.mark.parametrize(
    "path",
    [p for p in manifest_files() if p not in OUTSIDE_KUSTOMIZATIONS],
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in k8s_documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validator_rejects_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = workload("sfamp-deliver")
    deployment["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", kustomization_files(), ids=lambda p: p.parent.name)
def test_kustomize_build_renders_valid_manifests(kustomization: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "sfamp"
        for container in containers(document):
            assert container["image"] == "registry.example.com/sfamp:0.1.0"


def test_ingest_is_a_single_recreated_replica() -> None:
    ingest = workload("sfamp-ingest")
    assert ingest["spec"]["replicas"] == 1
    assert ingest["spec"]["strategy"] == {"type": "Recreate"}
    assert containers(ingest)[0]["args"] == ["run", "--role", "ingest"]


def test_ingest_keeps_the_reconcile_checkpoint_on_a_writable_volume() -> None:
    ingest = workload("sfamp-ingest")
    (container,) = containers(ingest)
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    state = PurePosixPath(env["SFAMP_RUNTIME__STATE_DIR"])
    mounts = [(m["name"], m["mountPath"]) for m in container["volumeMounts"]]
    name, _ = holding_mount(mounts, state)  # the root filesystem is read-only
    volumes = {v["name"]: v for v in ingest["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[name] or "persistentVolumeClaim" in volumes[name]


def test_deliver_scales_without_host_ports_and_has_a_budget() -> None:
    deliver = workload("sfamp-deliver")
    pod = deliver["spec"]["template"]["spec"]
    assert deliver["spec"]["replicas"] >= 2
    assert not pod.get("hostNetwork")
    assert all("hostPort" not in p for c in pod["containers"] for p in c.get("ports", []))
    assert containers(deliver)[0]["args"] == ["run", "--role", "deliver"]
    assert deliver["spec"]["replicas"] <= int(settings_configmap()["SFAMP_KAFKA__PARTITIONS"])
    (budget,) = k8s_documents(K8S / "deliver-pdb.yaml")
    labels = deliver["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", ["sfamp-ingest", "sfamp-deliver", "sfamp-backfill"])
def test_pods_outlive_the_drain_budget(name: str) -> None:
    pod = workload(name)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > drain_timeout_seconds()
    for container in pod["containers"]:
        assert {"requests", "limits"} <= set(container["resources"])
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name", ["sfamp-ingest", "sfamp-deliver"])
def test_probes_and_scraping_use_the_health_port(name: str) -> None:
    template = workload(name)["spec"]["template"]
    (container,) = template["spec"]["containers"]
    port = int(settings_configmap()["SFAMP_RUNTIME__HEALTH_PORT"])
    (named,) = [p for p in container["ports"] if p["containerPort"] == port]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": named["name"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    (service,) = k8s_documents(K8S / "metrics-service.yaml")
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def test_backfill_job_keeps_its_checkpoint_on_a_claim_it_declares() -> None:
    """The root filesystem is read-only: the checkpoint needs a writable volume, and one
    that outlives the pod, or a retried pod starts over."""
    pod = workload("sfamp-backfill")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    checkpoint = checkpoint_of(container["args"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    _, target = holding_mount([(m["name"], path) for path, m in mounts.items()], checkpoint)
    assert not mounts[target].get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[target]["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    kustomization = yaml.safe_load((K8S / "backfill" / "kustomization.yaml").read_text())
    claims = [
        doc
        for resource in kustomization["resources"]
        for doc in k8s_documents(K8S / "backfill" / resource)
        if doc["kind"] == "PersistentVolumeClaim"
    ]
    assert [doc["metadata"]["name"] for doc in claims] == [claim]
    assert "ReadWriteOnce" in claims[0]["spec"]["accessModes"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


def test_backfill_job_fails_at_once_when_amplitude_rejected_identifications() -> None:
    """Another pod would skip the finished objects and succeed, hiding the rejections."""
    job = workload("sfamp-backfill")["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # a podFailurePolicy needs it
    fail, ignore = job["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {
        "containerName": "sfamp",
        "operator": "In",
        "values": [REJECTED_EXIT_CODE],
    }
    # With restartPolicy Never each failed pod counts: an evicted one must not.
    assert ignore["action"] == "Ignore"
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]


def test_k8s_settings_and_secret_name_real_settings_only() -> None:
    (secret,) = k8s_documents(K8S / "secret.yaml")
    known = settings_env_names()
    assert set(settings_configmap()) <= known
    assert set(secret["stringData"]) <= known
    placeholders = secret["stringData"].values()
    assert all(value.startswith("REPLACE_ME") for value in placeholders)
    merged = {**settings_configmap(), **secret["stringData"]}
    mount_dirs = {m["mountPath"] for m in containers(workload("sfamp-ingest"))[0]["volumeMounts"]}
    assert str(Path(merged["SFAMP_MAPPING_FILE"]).parent) in mount_dirs


def test_k8s_example_mapping_is_a_valid_mapping() -> None:
    (configmap,) = k8s_documents(K8S / "mapping-configmap.yaml")
    config, problems = validate_document(json.loads(configmap["data"]["mapping.json"]))
    assert problems == []
    assert config is not None
    assert Path(settings_configmap()["SFAMP_MAPPING_FILE"]).name == "mapping.json"


# ---------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    (document,) = k8s_documents(RULES_FILE)
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"])


def test_alert_rules_use_only_exported_metrics() -> None:
    used = {
        name for rule in alert_rules() for name in re.findall(r"\bsfamp_[a-z0-9_]+", rule["expr"])
    }
    assert used - METRICS == set(), "unknown metric names"
    assert {"sfamp_last_successful_flush_timestamp_seconds", "sfamp_dlq_messages_total"} <= used


def test_alert_rule_metrics_match_the_runtime() -> None:
    metrics_module = pytest.importorskip("pipeline.runtime.metrics")
    exported: set[str] = set()
    for family in metrics_module.Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    assert exported >= METRICS
