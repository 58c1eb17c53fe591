"""deploy/kubernetes: every manifest passes kubernetes-validate (strict, against a pinned
Kubernetes version) and yamllint; the site config in the ConfigMap passes adacsc's own schema;
the probes, ports and drain times agree with that site config."""

from pathlib import Path

import pytest
import yaml

from adacsc.commands import site_config
from adacsc.server.server import ABANDON_WAIT_S, CANCEL_WAIT_S

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the test extras (kubernetes-validate)")
yamllint_config = pytest.importorskip("yamllint.config", reason="the test extras (yamllint)")
from yamllint import linter  # noqa: E402

KUBERNETES = "1.33.0"
"""the pinned Kubernetes version the manifests are validated against"""
FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
PREPARED_STOP_S = 5
"""the preStop sleep: the pod leaves the Service's endpoints before SIGTERM"""


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d is not None]


def manifests() -> list[str]:
    return documents("kustomization.yaml")[0]["resources"]


def by_kind() -> dict[str, dict]:
    return {d["kind"]: d for name in manifests() for d in documents(name)}


def test_every_yaml_file_passes_yamllint():
    config = yamllint_config.YamlLintConfig(file=str(FOLDER / ".yamllint.yaml"))
    files = sorted(FOLDER.glob("*.yaml")) + [FOLDER / ".yamllint.yaml"]
    assert len(files) >= 8
    problems = [f"{path.name}:{p.line}: {p.message}" for path in files for p in linter.run(path.read_text(), config)]
    assert not problems


@pytest.mark.parametrize("name", manifests())
def test_every_manifest_is_valid_for_the_pinned_kubernetes(name):
    for document in documents(name):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_validation_catches_a_wrong_field():
    deployment = by_kind()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_every_kind_is_there_and_the_folder_holds_nothing_unlisted():
    assert set(by_kind()) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget",
                              "HorizontalPodAutoscaler"}
    listed = set(manifests()) | {"kustomization.yaml", "prometheus-adapter-values.yaml", ".yamllint.yaml"}
    assert {p.name for p in FOLDER.iterdir()} == listed


def site(tmp_path: Path) -> dict:
    """The ConfigMap's site config, checked by `adacsc serve`'s own loader."""
    path = tmp_path / "site.yaml"
    path.write_text(by_kind()["ConfigMap"]["data"]["site.yaml"])
    document, _ = site_config.load(path)
    return document


def test_the_deployment_matches_its_site_config(tmp_path):
    config = site(tmp_path)
    kinds = by_kind()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ismrmrd": config["server"]["port"], "metrics": config["metrics"]["port"]}
    assert config["server"]["host"] == config["metrics"]["host"] == "0.0.0.0"
    assert container["args"] == ["serve", "--config", "/etc/adacsc/site.yaml"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "metrics"}
    assert config["server"]["warm_up"] is True
    # the drain: preStop, then SIGTERM and grace_s for running scans, then about a second in which
    # the scans still running are cancelled and told so (adacsc.server.server: CANCEL_WAIT_S,
    # ABANDON_WAIT_S); the kubelet must not kill the pod before that
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PREPARED_STOP_S)]
    needed = PREPARED_STOP_S + config["server"]["grace_s"] + CANCEL_WAIT_S + ABANDON_WAIT_S + 10
    assert pod["terminationGracePeriodSeconds"] >= needed
    annotations = kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config["metrics"]["port"])


def test_the_noise_folder_is_one_volume_shared_by_every_replica(tmp_path):
    config = site(tmp_path)
    kinds = by_kind()
    claim = kinds["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == config["folders"]["noise"] and not mount.get("readOnly")


def test_the_autoscaler_and_the_budget_target_the_deployment(tmp_path):
    config = site(tmp_path)
    kinds = by_kind()
    labels = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": kinds["Deployment"]["metadata"]["name"]}
    metric = hpa["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "adacsc_active_scans"  # served by adacsc.server.telemetry
    target = float(metric["target"]["averageValue"].removesuffix("m")) / 1000
    assert 0 < target <= config["server"]["workers"]
    assert hpa["minReplicas"] >= 2 and kinds["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert kinds["Service"]["spec"]["selector"] == labels
    adapter = documents("prometheus-adapter-values.yaml")[0]["rules"]["custom"][0]
    assert adapter["name"]["as"] == "adacsc_active_scans" and "adacsc_active_scans" in adapter["seriesQuery"]
