"""deploy/k8s, the kustomize base: every manifest validates (strictly: no
unknown field) against the Kubernetes versions kubernetes-validate ships, and
the manifests agree with each other and with the code: kustomization lists
every file, selectors match labels, Services' ports are the containers',
probes ask ports that serve them (the gRPC health service, the gateway's
/health), every variable is one bxb reads and every secret it names exists,
and NetworkPolicies open gRPC to the gateway and peer services only."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from gateway.app import create_app
from gateway.config import Settings as GatewaySettings
from tests.unit.deploy_checks import DATABASES, GRPC_PORTS, ROOT, SERVICES, check_command, unknown_names

BASE = ROOT / "deploy" / "k8s"
DEPLOYED = (*SERVICES, "gateway")
PART = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
Doc = dict[str, Any]


@cache
def kustomization() -> Doc:
    loaded: Doc = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return loaded


@cache
def documents() -> list[tuple[Path, Doc]]:
    """Every manifest the kustomization lists (parsed once: the tests only read them)."""
    return [
        (BASE / name, doc)
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((BASE / name).read_text())
        if doc is not None
    ]


def of_kind(kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def container(workload: Doc) -> Doc:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def env(workload: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container(workload).get("env", [])}


def config() -> dict[str, str]:
    data: dict[str, str] = of_kind("ConfigMap")["bxb-config"]["data"]
    return data


def workloads() -> list[Doc]:
    return [*of_kind("Deployment").values(), *of_kind("Job").values()]


def test_the_kustomization_lists_every_manifest_of_the_base():
    files = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)
    [namespace] = of_kind("Namespace")
    assert kustomization()["namespace"] == namespace
    assert [image["name"] for image in kustomization()["images"]] == ["bxb"]


@pytest.mark.parametrize("version", sorted(set(all_versions())))
def test_every_manifest_is_valid_kubernetes(version):
    for path, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} on {version}: {error.message}")


def test_what_runs_for_each_part():
    kinds = defaultdict(set)
    for _, doc in documents():
        kinds[doc["kind"]].add(doc["metadata"]["name"])
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"):
        assert kinds[kind] == set(DEPLOYED), kind
    assert kinds["Job"] == {f"migrate-{service}" for service in SERVICES}
    assert kinds["Secret"] == {"bxb-secrets", "bxb-tls"}
    assert kinds["ConfigMap"] == {"bxb-config"}


def test_every_command_is_one_the_image_runs():
    for name, deployment in of_kind("Deployment").items():
        module = "gateway" if name == "gateway" else f"services.{name}"
        assert container(deployment)["command"] == ["python", "-m", module]
        assert container(deployment)["image"] == "bxb"
    for name, job in of_kind("Job").items():
        service = name.removeprefix("migrate-")
        assert container(job)["command"] == ["python", "-m", f"services.{service}", "migrate"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for workload in workloads():
        check_command(container(workload)["command"])


def test_pods_run_as_non_root_on_a_read_only_root_filesystem_with_resources():
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 1000
        assert pod["automountServiceAccountToken"] is False
        security = container(workload)["securityContext"]
        assert security == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        mounts = {mount["mountPath"]: mount["name"] for mount in container(workload)["volumeMounts"]}
        assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]  # BXB_HOME and tempfiles
        resources = container(workload)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_selectors_match_the_pods_labels():
    for name, deployment in of_kind("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert labels[COMPONENT] == name and labels[PART] == "bxb"
        assert of_kind("Service")[name]["spec"]["selector"] == selector
        assert of_kind("PodDisruptionBudget")[name]["spec"]["selector"]["matchLabels"] == selector
        assert of_kind("NetworkPolicy")[name]["spec"]["podSelector"]["matchLabels"] == selector
        # No other workload's pods are selected too (migrations are labelled as such).
        for other in workloads():
            other_labels = other["spec"]["template"]["metadata"]["labels"]
            same = (other["kind"], other["metadata"]["name"]) == ("Deployment", name)
            assert same == (selector.items() <= other_labels.items())


def test_services_expose_the_ports_the_containers_serve():
    for name, service in of_kind("Service").items():
        ports = {port["name"]: port["containerPort"] for port in container(of_kind("Deployment")[name])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
            if name in SERVICES:  # headless: peers connect to the pod's own port
                assert port["port"] == ports[port["targetPort"]]
        if name in SERVICES:
            assert service["spec"]["clusterIP"] == "None"  # every pod's address, for round_robin
        else:
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in service["spec"]


def test_each_service_listens_where_its_peers_dial_and_is_probed_on_its_health_port():
    for service, port in GRPC_PORTS.items():
        deployment = of_kind("Deployment")[service]
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert ports["grpc"] == port
        assert env(deployment)[f"BXB_{service.upper()}_LISTEN"]["value"] == f"0.0.0.0:{port}"
        assert config()[f"BXB_{service.upper()}_ADDRESS"] == f"dns:///{service}:{port}"
        assert of_kind("Service")[service]["metadata"]["name"] == service
        metrics = env(deployment)[f"BXB_{service.upper()}_METRICS_LISTEN"]["value"]
        assert metrics == f"0.0.0.0:{ports['metrics']}"
        # grpc.health.v1 (service ""), SERVING once started, on the plaintext health-only port
        # (services/common/health_port.py): the kubelet presents no client certificate to the mutual-TLS port.
        health = env(deployment)[f"BXB_{service.upper()}_HEALTH_LISTEN"]["value"]
        assert health == f"0.0.0.0:{ports['health']}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container(deployment)[probe]["grpc"] == {"port": ports["health"]}


def test_the_gateway_listens_on_its_http_port_and_is_probed_on_health():
    deployment = of_kind("Deployment")["gateway"]
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert int(env(deployment)["BXB_GATEWAY_PORT"]["value"]) == ports["http"]
    assert env(deployment)["BXB_GATEWAY_HOST"]["value"] == "0.0.0.0"
    served = {route.path for route in create_app(GatewaySettings.from_env()).routes}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container(deployment)[probe]["httpGet"]
        assert check["port"] == "http" and check["path"] in served


def test_autoscalers_and_disruption_budgets_cover_every_deployment():
    for name, deployment in of_kind("Deployment").items():
        hpa = of_kind("HorizontalPodAutoscaler")[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 2 <= hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
        [metric] = hpa["metrics"]
        assert metric["resource"]["name"] == "cpu"  # measured against the container's cpu request
        assert "cpu" in container(deployment)["resources"]["requests"]
        assert of_kind("PodDisruptionBudget")[name]["spec"]["maxUnavailable"] == 1


def test_network_policies_open_grpc_to_the_gateway_and_peers_only_and_metrics_to_monitoring():
    for service in SERVICES:
        policy = of_kind("NetworkPolicy")[service]["spec"]
        assert policy["policyTypes"] == ["Ingress"]
        grpc, metrics = policy["ingress"]
        assert grpc["ports"] == [{"protocol": "TCP", "port": "grpc"}]
        [peers] = grpc["from"]
        selector = peers["podSelector"]
        assert selector["matchLabels"] == {PART: "bxb"} and "namespaceSelector" not in peers
        [allowed] = selector["matchExpressions"]
        assert allowed["key"] == COMPONENT and allowed["operator"] == "In"
        assert set(allowed["values"]) == set(DEPLOYED)  # not the migration Jobs, nothing else
        assert metrics["ports"] == [{"protocol": "TCP", "port": "metrics"}]
        assert metrics["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    gateway = of_kind("NetworkPolicy")["gateway"]["spec"]
    assert gateway["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]


def test_every_variable_is_read_by_bxb_and_every_secret_named_exists():
    secrets = of_kind("Secret")
    assert unknown_names(config()) == []
    assert unknown_names(secrets["bxb-secrets"]["stringData"]) == []
    for workload in workloads():
        assert unknown_names(env(workload)) == [], workload["metadata"]["name"]
        assert container(workload)["envFrom"] == [{"configMapRef": {"name": "bxb-config"}}]
        for item in env(workload).values():
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "bxb-secrets" and ref["key"] == item["name"]
                assert ref["key"] in secrets["bxb-secrets"]["stringData"]
    for service in DATABASES:
        assert f"BXB_{service.upper()}_DATABASE_URL" in env(of_kind("Deployment")[service])
        assert f"BXB_{service.upper()}_DATABASE_URL" in env(of_kind("Job")[f"migrate-{service}"])
    assert "BXB_CLICKHOUSE_URL" in env(of_kind("Job")["migrate-metering"])
    assert config()["BXB_MIGRATE_ON_START"] == "0"  # the Jobs migrate, the replicas do not


def test_the_tls_secret_is_mounted_where_bxb_tls_dir_points():
    tls = of_kind("Secret")["bxb-tls"]
    assert tls["type"] == "kubernetes.io/tls"
    assert set(tls["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    for workload in workloads():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]}
        mount = mounts[config()["BXB_TLS_DIR"]]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == "bxb-tls"
