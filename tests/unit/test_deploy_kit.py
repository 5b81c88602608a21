"""The deploy kit is consistent with itself and with the service, checked statically.

No Docker engine or cluster is needed: the compose file, the Kubernetes manifests and
the Dockerfile are parsed and checked against each other and against
``stream.config`` (every ``STREAM_*`` variable must be a real option with a valid
value). Built-in Kubernetes kinds are validated with kubernetes-validate's strict
schemas; the CRDs (PodMonitor, KEDA's ScaledObject), which it has no schema for,
by hand. tests/integration/test_scale_out.py checks what needs a live service.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from stream.config import (
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
)
from stream.options import env_name, load, option_env, option_fields

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = DEPLOY / "k8s"
PYPROJECT = ROOT / "pyproject.toml"

OPTIONS = {
    option_env(cls, f.name)
    for cls in (RunSettings, ProduceSettings, TopicsSettings, LagSettings)
    for f in option_fields(cls)
} | {env_name("config")}

BUILTIN_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
CRD_KINDS = {"PodMonitor", "ScaledObject"}
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


# ---- loading --------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services[name]


def environment(svc: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment, as the container sees it (all strings)."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every Kubernetes object in deploy/k8s."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return tuple(found)


def manifest(kind: str) -> dict[str, Any]:
    matches = [doc for _, doc in manifests() if doc.get("kind") == kind]
    assert len(matches) == 1, f"expected one {kind} in deploy/k8s, found {len(matches)}"
    return copy.deepcopy(matches[0])


def config_data() -> dict[str, str]:
    data: dict[str, str] = manifest("ConfigMap")["data"]
    return data


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def duration_seconds(text: str) -> float:
    """A compose duration such as 45s, 1m30s or 1m."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def topics_partitions() -> int:
    """The partition count the compose stack's `topics` service creates."""
    command = service("topics")["command"]
    args = shlex.split(command) if isinstance(command, str) else list(command)
    assert args[:2] == ["topics", "create"]
    return int(args[args.index("--partitions") + 1])


# ---- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines too
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    return tuple(dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")))


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from its FROM to the next)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def base_image(from_args: str) -> str:
    """The image of a FROM line, with global ARG defaults substituted."""
    defaults = {}
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name.strip()] = value.strip()
    image = from_args.split(maxsplit=1)[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], image)


def env_instructions(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for k, rest in stage if k == keyword]
    assert values, f"no {keyword} in the runtime stage"
    return values[-1]  # the last one wins


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    runtime = all_stages[-1]
    assert base_image(runtime[0][1]) == "python:3.11-slim"
    build_runs = " ".join(rest for k, rest in all_stages[0] if k == "RUN")
    assert "pip wheel" in build_runs
    runtime_runs = " ".join(rest for k, rest in runtime if k == "RUN")
    # The runtime installs the build stage's wheels and nothing from an index.
    assert "pip install" in runtime_runs
    assert "--no-index" in runtime_runs
    assert "from=build" in runtime_runs or any(
        k == "COPY" and "--from=build" in rest for k, rest in runtime
    )
    # No dev extras anywhere in the image.
    text = " ".join(rest for _, rest in dockerfile())
    assert "[dev]" not in text
    assert "pytest" not in text


def test_dockerfile_installs_the_locked_dependencies_by_hash() -> None:
    build = stages()[0]
    copied = [p for k, rest in build if k == "COPY" for p in shlex.split(rest)[:-1]]
    assert "requirements.lock" in copied
    runs = " ".join(rest for k, rest in build if k == "RUN")
    assert "--require-hashes -r requirements.lock" in runs
    # The project's own wheel resolves nothing again: only the lock brings dependencies.
    assert "--no-deps ." in runs
    assert "requirements-dev.lock" not in runs


def test_dockerfile_copies_every_package_the_project_ships() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {p.rstrip("*").rstrip(".") for p in packages}
    copied: set[str] = set()
    for keyword, rest in stages()[0]:
        if keyword == "COPY" and "--from" not in rest:
            copied.update(p.rstrip("/").removeprefix("./") for p in shlex.split(rest)[:-1])
    assert top_level <= copied, f"the build stage does not copy {top_level - copied}"
    assert {"pyproject.toml", "README.md"} <= copied


def test_dockerfile_runtime_contract() -> None:
    runtime = stages()[-1]
    user = only(runtime, "USER")
    uid = user.split(":")[0]
    assert uid not in {"root", "0"}, user
    assert uid.isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    assert json.loads(only(runtime, "ENTRYPOINT")) == ["stream"]
    assert json.loads(only(runtime, "CMD")) == ["run"]
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert "stream" in project["project"]["scripts"]
    assert only(runtime, "STOPSIGNAL") == "SIGTERM"
    assert "9400" in only(runtime, "EXPOSE").split()
    env = env_instructions(runtime)
    assert env["STREAM_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - scraped from outside
    assert env["PYTHONUNBUFFERED"] == "1"
    assert {k for k in env if k.startswith("STREAM_")} <= OPTIONS
    healthcheck = only(runtime, "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "urllib" in healthcheck
    assert "127.0.0.1" in healthcheck
    assert "curl" not in healthcheck  # not in -slim images


def test_dockerfile_user_matches_the_pod_security_context() -> None:
    uid = only(stages()[-1], "USER").split(":")[0]
    pod = manifest("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert str(pod["runAsUser"]) == uid


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [x.strip().rstrip("/") for x in lines if x.strip() and not x.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.removeprefix("!")
        candidates = [bare, bare.removeprefix("**/")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            result = not negate
    return result


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/kafka/.cache/x"):
        assert ignored(path, patterns), path
    for path in ("stream/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x", ".pytest_cache/x"):
        assert ignored(path, patterns), path
    needed = ("pyproject.toml", "README.md", "requirements.lock", "stream/cli.py")
    for path in (*needed, "transforms/__init__.py"):
        assert not ignored(path, patterns), f"{path} is needed by the image"


# ---- docker compose -------------------------------------------------------------------------


def test_compose_has_the_stack() -> None:
    services = compose()["services"]
    assert {"kafka", "topics", "stream", "prometheus", "grafana", "producer"} <= set(services)
    assert service("producer")["profiles"] == ["producer"]
    for name in ("kafka", "topics", "stream", "prometheus", "grafana"):
        assert "profiles" not in service(name), f"{name} must start by default"
    assert service("kafka")["image"].startswith("apache/kafka:")
    assert service("prometheus")["image"].startswith("prom/prometheus:")
    assert service("grafana")["image"].startswith("grafana/grafana:")


def test_compose_start_order() -> None:
    stream = service("stream")
    assert stream["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert stream["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert service("topics")["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service("topics")["restart"] == "no"
    producer = service("producer")
    assert producer["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # A healthy condition needs a health check on the broker; the image keeps Kafka's
    # scripts under /opt/kafka/bin.
    test = service("kafka")["healthcheck"]["test"]
    command = test if isinstance(test, str) else " ".join(test)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command


def test_compose_stream_services_build_the_dockerfile_from_the_repo_root() -> None:
    for name in ("topics", "stream", "producer"):
        build = service(name)["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
    assert service("topics")["command"][:2] == ["topics", "create"]
    assert topics_partitions() == 4
    assert service("stream")["command"] == ["run"]
    producer = service("producer")["command"]
    assert producer[0] == "produce"
    assert producer[producer.index("--rate") + 1] == "200"
    assert producer[producer.index("--count") + 1] == "1000000"


def listeners(value: str) -> dict[str, str]:
    """NAME://host:port,... -> {NAME: host:port}."""
    return dict(item.split("://", 1) for item in value.split(","))


def test_compose_broker_is_reachable_from_the_network_and_the_host() -> None:
    env = environment(service("kafka"))
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(env["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for name, address in advertised.items():
        assert name in bound, f"advertised listener {name} is not bound"
        assert address.split(":")[1] == bound[name].split(":")[-1], name
        assert name in protocols, name
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in bound
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Containers use kafka:<port>; the host uses localhost:<published port>.
    addresses = set(advertised.values())
    for name in ("topics", "stream", "producer"):
        bootstrap = environment(service(name))["STREAM_BOOTSTRAP_SERVERS"]
        assert bootstrap.startswith("kafka:")
        assert bootstrap in addresses, name
    host = [a for a in addresses if a.startswith("localhost:")]
    assert len(host) == 1
    published = {p.split(":")[-2] + ":" + p.split(":")[-1] for p in service("kafka")["ports"]}
    port = host[0].split(":")[1]
    assert f"{port}:{port}" in published


def test_compose_stream_service_exposes_metrics_and_stops_gracefully() -> None:
    stream = service("stream")
    env = environment(stream)
    port = env.get("STREAM_METRICS_PORT", "9400")
    assert f"{port}:{port}" in stream["ports"]
    assert env.get("STREAM_METRICS_HOST", "0.0.0.0") == "0.0.0.0"  # noqa: S104
    drain = float(env.get("STREAM_DRAIN_TIMEOUT", RunSettings().drain_timeout))
    assert duration_seconds(stream["stop_grace_period"]) > drain
    assert stream.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_prometheus_scrapes_the_stream_service() -> None:
    prometheus = service("prometheus")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    source = (DEPLOY / mounts["/etc/prometheus"]).resolve()
    config = yaml.safe_load((source / "prometheus.yml").read_text(encoding="utf-8"))
    command = prometheus.get("command", ["--config.file=/etc/prometheus/prometheus.yml"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    for rule_file in config["rule_files"]:
        assert (source / rule_file).is_file(), rule_file
    targets = [
        target
        for job in config["scrape_configs"]
        if job["job_name"] == "stream"
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    port = environment(service("stream")).get("STREAM_METRICS_PORT", "9400")
    assert f"stream:{port}" in targets
    assert "9090:9090" in prometheus["ports"]


def test_compose_grafana_paths_match_its_provisioning() -> None:
    grafana = service("grafana")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve()
    dashboards_provider = yaml.safe_load(
        (provisioning / "dashboards" / "stream.yml").read_text(encoding="utf-8")
    )
    dashboards_path = dashboards_provider["providers"][0]["options"]["path"]
    assert dashboards_path in mounts, "the provider's path must be the mounted dashboards"
    dashboards = (DEPLOY / mounts[dashboards_path]).resolve()
    dashboard = json.loads((dashboards / "stream.json").read_text(encoding="utf-8"))
    assert dashboard["title"] == "stream"
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert home.startswith(dashboards_path + "/")
        assert (dashboards / home.removeprefix(dashboards_path + "/")).is_file()
    datasource = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    url = datasource["datasources"][0]["url"]
    assert url == "http://prometheus:9090"
    assert "3000:3000" in grafana["ports"]


def test_compose_volumes_point_at_existing_files() -> None:
    named = set(compose().get("volumes") or {})
    checked = 0
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
                checked += 1
            else:
                assert source in named, f"{name}: named volume {source} is not declared"
    assert checked >= 3


def stream_env_vars() -> Iterator[tuple[str, str, str]]:
    """(where, name, value) of every STREAM_* variable the kit sets."""
    for name, svc in compose()["services"].items():
        for key, value in environment(svc).items():
            if key.startswith("STREAM_"):
                yield f"compose service {name}", key, value
    for key, value in config_data().items():
        yield "k8s ConfigMap", key, value
    for key in manifest("Secret").get("stringData", {}):
        yield "k8s Secret", key, ""


def test_every_stream_variable_is_a_real_option() -> None:
    seen = list(stream_env_vars())
    assert len(seen) >= 10
    for where, key, _ in seen:
        if where == "k8s Secret" and not key.startswith("STREAM_"):
            continue
        assert key in OPTIONS, f"{where}: {key} is not an option of stream"
    # The check itself can fail.
    assert "STREAM_NO_SUCH_OPTION" not in OPTIONS


@pytest.mark.parametrize(
    ("where", "cls"),
    [
        ("topics", TopicsSettings),
        ("stream", RunSettings),
        ("producer", ProduceSettings),
        ("configmap", RunSettings),
    ],
)
def test_stream_variables_have_valid_values(where: str, cls: type[Any]) -> None:
    env = config_data() if where == "configmap" else environment(service(where))
    settings = load(cls, {}, environ=env)  # raises ConfigError on a bad value
    fields = {option_env(cls, f.name): f for f in option_fields(cls)}
    for key, value in env.items():
        if key.startswith("STREAM_"):
            assert key in fields, f"{where}: {key} is not an option of {cls.__name__}"
            field = fields[key]
            assert getattr(settings, field.name) == field.metadata["parse"](value), key


# ---- Kubernetes -----------------------------------------------------------------------------


def test_k8s_has_every_kind() -> None:
    kinds = {doc["kind"] for name, doc in manifests() if name != "kustomization.yaml"}
    assert kinds == BUILTIN_KINDS | CRD_KINDS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_manifests_pass_strict_schema_validation(version: str) -> None:
    validated = set()
    for name, doc in manifests():
        if doc["kind"] in BUILTIN_KINDS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(map(str, error.path))
                pytest.fail(f"{name}: {doc['kind']} {path}: {error.message}")
            validated.add(doc["kind"])
    assert validated == BUILTIN_KINDS


def test_strict_validation_rejects_a_broken_deployment() -> None:
    """The validator used above does reject mistakes (so passing means something)."""
    broken = manifest("Deployment")
    container(broken)["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = manifest("Deployment")
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_existing_manifests_without_the_hpa() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    expected = {
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
        "podmonitor.yaml",
        "keda-scaledobject.yaml",
    }
    assert set(resources) == expected
    assert "hpa.yaml" not in resources  # an alternative to KEDA, swapped in by hand
    assert (K8S / "hpa.yaml").is_file()
    image = container(manifest("Deployment"))["image"].split(":")[0]
    assert image in {i["name"] for i in kustomization.get("images", [])}


def probe_port(probe: Mapping[str, Any], ports: list[dict[str, Any]]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in ports}
    assert port in named, f"probe port {port!r} is not a container port"
    return int(named[port])


def test_deployment_probes_resources_and_shutdown() -> None:
    deployment = manifest("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    main = container(deployment)
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    ports = main["ports"]
    metrics_port = int(config_data().get("STREAM_METRICS_PORT", "9400"))
    assert {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"} in ports
    assert metrics_port == 9400
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in main:
            assert probe_port(main[probe], ports) == 9400, probe
            assert main[probe]["timeoutSeconds"] >= 2  # health answers wait up to 1s
    drain = float(config_data()["STREAM_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > drain
    # envFrom: the ConfigMap and the Secret of this kit.
    refs = main["envFrom"]
    assert {"configMapRef": {"name": manifest("ConfigMap")["metadata"]["name"]}} in refs
    secret_refs = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
    assert secret_refs == [manifest("Secret")["metadata"]["name"]]
    resources = main["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["limits"])
    # One worker process per CPU of the limit, not per CPU of the node.
    assert int(config_data()["STREAM_WORKERS"]) == int(resources["limits"]["cpu"])


def test_deployment_security_and_spread() -> None:
    deployment = manifest("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # multiprocessing needs a writable /tmp
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = anti[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()


def test_service_exposes_the_metrics_port_of_the_pods() -> None:
    svc = manifest("Service")
    assert svc["spec"]["type"] == "ClusterIP"
    labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["port"] == 9400
    assert port["targetPort"] in ("metrics", 9400)


def test_secret_is_an_obvious_placeholder() -> None:
    secret = manifest("Secret")
    assert "data" not in secret  # no base64 that hides a real value
    values = secret["stringData"]
    assert values
    credentials = {k: v for k, v in values.items() if "USERNAME" in k or "PASSWORD" in k}
    assert credentials
    assert all("CHANGE-ME" in v for v in credentials.values())
    assert "PLACEHOLDER" in (K8S / "secret.yaml").read_text(encoding="utf-8")


def test_podmonitor_scrapes_the_metrics_port() -> None:
    monitor = manifest("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    spec = monitor["spec"]
    labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    endpoints = spec["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"]
    assert all(e.get("path", "/metrics") == "/metrics" for e in endpoints)
    # The alerts and the dashboard select job="stream".
    assert labels[spec["jobLabel"]] == "stream"


def test_keda_scales_the_deployment_on_the_groups_lag() -> None:
    scaled = manifest("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == manifest("Deployment")["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= topics_partitions()
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    config = config_data()
    assert meta["consumerGroup"] == config["STREAM_GROUP_ID"]
    assert meta["topic"] == config["STREAM_INPUT_TOPIC"]
    assert meta["bootstrapServers"] == config["STREAM_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata are strings"


def test_hpa_is_a_cpu_alternative_for_the_same_deployment() -> None:
    hpa = manifest("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == manifest("Deployment")["metadata"]["name"]
    assert spec["maxReplicas"] <= topics_partitions()
    assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
    assert "kustomization" in (K8S / "hpa.yaml").read_text(encoding="utf-8")


# ---- an image with a user's transform -----------------------------------------------------

DERIVED = DEPLOY / "examples" / "Dockerfile.transform"
EXAMPLE = ROOT / "transforms" / "examples" / "celsius.py"


def test_the_derived_dockerfile_is_two_lines_on_the_service_image() -> None:
    instructions = dockerfile_instructions(DERIVED.read_text(encoding="utf-8"))
    assert [k for k, _ in instructions] == ["FROM", "COPY"]
    tag = instructions[0][1]
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    # The tag the kit builds and deploys (deploy/Dockerfile's comment, the Deployment).
    assert tag == f"stream:{project['version']}"
    assert manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == tag
    source, target = shlex.split(instructions[1][1])
    assert source == EXAMPLE.name  # the README's example module
    # Copied into the working directory of the service image, which is on sys.path.
    workdir = [rest for k, rest in stages()[-1] if k == "WORKDIR"][-1]
    assert target in ("./", ".", workdir, workdir + "/")


def test_the_derived_image_is_configured_by_the_transform_variable() -> None:
    text = DERIVED.read_text(encoding="utf-8")
    spec = re.search(r"STREAM_TRANSFORM=(\S+)", text)
    assert spec is not None
    module, _, function = spec.group(1).partition(":")
    assert module == EXAMPLE.stem
    assert f"def {function}(" in EXAMPLE.read_text(encoding="utf-8")
    assert "STREAM_TRANSFORM" in OPTIONS
    assert "STREAM_TRANSFORM" in config_data()  # the ConfigMap sets it: edit it there
