"""deploy/k8s: every manifest is valid against the Kubernetes JSON schemas
(kubernetes-validate, strict: an unknown field is an error), the pieces fit
together (selectors, ports, the Secret's keys, the HPA's target, the
Prometheus scrape names), the pods are non-root, read-only and drain in
their grace period, and every container's args, with its ConfigMap and
Secret, pass ``seckill serve --check-config``."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.ci import missing
from tests.helpers.cli import run_module

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: the Kubernetes versions the manifests are checked against
VERSIONS = ("1.29.0", "1.33.0")
NAMESPACE = "seckill"
#: SECKILL_* variables that are not a flag of `seckill serve`
ENV_ONLY = {"SECKILL_ADMIN_TOKEN", "SECKILL_JWT_SECRET", "SECKILL_LOG_LEVEL"}
#: seconds seckill may take after SIGTERM: in-flight requests, then deliveries
DRAIN = 10 + 10

pytestmark = pytest.mark.ops


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


DOCS = manifests()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return found


def deployments() -> dict[str, dict[str, Any]]:
    """{component: Deployment}."""
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in of_kind("Deployment")
    }


def test_every_manifest_is_valid_for_kubernetes() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (a dev dependency: make install)")
    assert len(DOCS) >= 9
    for version in VERSIONS:
        for name, doc in DOCS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_the_schema_check_is_not_vacuous() -> None:
    """A misspelt field and a wrong type are refused."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (a dev dependency: make install)")
    gateway = copy.deepcopy(one("Deployment", "seckill-gateway"))
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, VERSIONS[0], strict=True)
    gateway = copy.deepcopy(one("Deployment", "seckill-gateway"))
    gateway["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, VERSIONS[0], strict=True)


def test_everything_is_in_one_namespace_and_labelled() -> None:
    for name, doc in DOCS:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "seckill", name
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, name


def test_a_gateway_and_a_worker_deployment_with_their_role() -> None:
    found = deployments()
    assert set(found) == {"gateway", "worker"}
    for component, deployment in found.items():
        spec = deployment["spec"]
        pod = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        args = container["args"]
        assert args[0] == "serve" and args[args.index("--role") + 1] == component


def test_probes_drain_resources_and_security() -> None:
    for component, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert "http" in port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        # preStop sleeps while the endpoints forget the pod, then SIGTERM drains
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= int(pre_stop[1]) + DRAIN + 5, component
        if component == "gateway":
            assert int(pre_stop[1]) >= 5, "a gateway must leave the endpoints before draining"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), component
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        # read-only root: what seckill writes has a volume
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        config = one("ConfigMap", "seckill")["data"]
        assert config["SECKILL_DATA_DIR"] in mounts and "/tmp" in mounts


def test_secrets_come_from_the_secret_only() -> None:
    secret = one("Secret", "seckill")
    for deployment in deployments().values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for name in ("SECKILL_ADMIN_TOKEN", "SECKILL_REDIS_URL", "SECKILL_ORDER_SINK"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "seckill" and ref["key"] in secret["stringData"]
        assert all("value" not in e for e in container["env"]), "a literal value in env"
    configured = one("ConfigMap", "seckill")["data"]
    assert not {"SECKILL_ADMIN_TOKEN", "SECKILL_REDIS_URL", "SECKILL_JWT_SECRET"} & set(configured)


def test_services_hpa_pdb_and_scrape_config_fit_the_pods() -> None:
    pods = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in deployments().items()}
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        matched = [c for c, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, service["metadata"]["name"]
        assert all(p["targetPort"] == "http" for p in service["spec"]["ports"])
        if service["spec"].get("clusterIP") == "None":  # for Prometheus: every pod, ready or not
            assert service["spec"]["publishNotReadyAddresses"] is True
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "seckill-gateway")
    assert hpa["spec"]["minReplicas"] >= 2
    for pdb in of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [c for c, labels in pods.items() if selector.items() <= labels.items()]
    # the scrape config finds the headless Services by their DNS names
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/scrape/prometheus.yml").read_text())
    headless = {
        f"{s['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        for s in of_kind("Service")
        if s["spec"].get("clusterIP") == "None"
    }
    names = {
        n for job in scrape["scrape_configs"] for sd in job["dns_sd_configs"] for n in sd["names"]
    }
    assert names == headless
    # the pods want a metrics token: Prometheus sends one
    assert "SECKILL_METRICS_TOKEN" in one("Secret", "seckill")["stringData"]
    for job in scrape["scrape_configs"]:
        assert job["authorization"]["credentials_file"], job["job_name"]


def serve_flags() -> set[str]:
    result = run_module("seckill", "serve", "--help")
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"--[a-z][a-z-]+", result.stdout))


def test_every_configured_variable_is_a_setting() -> None:
    flags = serve_flags()
    names = set(one("ConfigMap", "seckill")["data"]) | set(one("Secret", "seckill")["stringData"])
    for name in names:
        flag = "--" + name.removeprefix("SECKILL_").lower().replace("_", "-")
        assert name in ENV_ONLY or flag in flags, f"{name}: seckill serve has no {flag}"
    for deployment in deployments().values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for arg in container["args"]:
            assert not arg.startswith("--") or arg in flags, arg


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets: its ConfigMaps, then its env, the
    Secret's values taken from secret.example.yaml."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = one("Secret", ref["name"])["stringData"][ref["key"]]
    return env


@pytest.mark.parametrize("component", ["gateway", "worker"])
def test_each_containers_args_pass_check_config(component: str) -> None:
    (container,) = deployments()[component]["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    result = run_module("seckill", *container["args"], "--check-config", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "seckill: configuration OK"
    shown = dict(line.split(None, 1) for line in lines[:-1])
    assert shown["role"] == component
    assert (shown["host"], shown["port"], shown["data_dir"]) == ("0.0.0.0", "8080", "/data")
    assert shown["log_format"] == "json"
    assert shown["redis_url"] == "redis://:***@redis.seckill.svc:6379/0"
    for secret in one("Secret", "seckill")["stringData"].values():
        password = secret.split("@")[0].rsplit(":", 1)[-1]
        assert password not in result.stdout, "a secret printed by --check-config"
