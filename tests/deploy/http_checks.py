"""Checks that the server's HTTP endpoint (conductor-server --http: Prometheus /metrics,
/api/status, the dashboard, /healthz) is reachable where deploy/ says it is: the flag listens
beyond loopback on a port the container declares, the probes, scrape annotations, Service and
published ports point at that port, and the Dockerfile exposes it. Each returns a list of
problems (empty: fine). The live runs (test_compose.py, test_kubernetes.py) then request the
very paths and ports named here from the running server."""

import re

import kubernetes as k8s
from kubernetes import _name, _pod_labels, _pod_spec, _matches

# What the server's HTTP endpoint serves (libconductor/src/http_endpoint.cpp).
SERVED_PATHS = {"/", "/metrics", "/api/status", "/healthz", "/dashboard.js", "/dashboard.css"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
LOOPBACK = ("127.", "localhost", "[::1]")


def http_flag(args):
    """The value of --http in an argv (either `--http V` or `--http=V`), or None."""
    args = [str(a) for a in args]
    for i, word in enumerate(args):
        if word == "--http" and i + 1 < len(args):
            return args[i + 1]
        if word.startswith("--http="):
            return word.split("=", 1)[1]
    return None


def split_address(value):
    """'0.0.0.0:9090' -> ('0.0.0.0', 9090); '9090' -> ('127.0.0.1', 9090), as the server
    reads it (a port alone is loopback)."""
    match = re.fullmatch(r"(?:(\[[^\]]+\]|[^:]+):)?(\d+)", value)
    if not match:
        return None, None
    return match.group(1) or "127.0.0.1", int(match.group(2))


def _address_problems(where, value):
    if value is None:
        return [f"{where}: conductor-server runs without --http: no probe or scrape can reach it"], None
    host, port = split_address(value)
    if port is None:
        return [f"{where}: --http {value} is no [HOST:]PORT"], None
    if host.startswith(LOOPBACK):
        return [f"{where}: --http {value} listens on loopback only: probes and scrapes from "
                f"outside cannot reach it (use 0.0.0.0:{port})"], port
    return [], port


def server_containers(k):
    for workload in k.workloads():
        for container in _pod_spec(workload).get("containers", []):
            if container.get("args", [None])[0] == "conductor-server":
                yield workload, container


def _container_port(container, port):
    """The containerPort number a probe or Service port (a name or a number) refers to."""
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry.get("containerPort")):
            return entry.get("containerPort")
    return None


def check_kubernetes_http(k):
    problems = []
    for workload, container in server_containers(k):
        where = f"{_name(workload)}: container {container['name']}"
        defined = k8s.container_env(k, container)
        found, port = _address_problems(where, http_flag([k8s.expand(w, defined) for w in container["args"]]))
        problems += found
        if port is None:
            continue
        if _container_port(container, port) is None:
            problems.append(f"{where}: --http port {port} is no containerPort of the container")
        for probe in PROBES:
            handler = container.get(probe)
            if handler is None:
                problems.append(f"{where}: no {probe}")
                continue
            get = handler.get("httpGet")
            if get is None:
                problems.append(f"{where}: {probe} is no httpGet on the --http port {port}")
                continue
            number = _container_port(container, get.get("port"))
            if number != port:
                problems.append(f"{where}: {probe} httpGet port {get.get('port')} is container port "
                                f"{number}, not the --http port {port}")
            if get.get("path") not in SERVED_PATHS:
                problems.append(f"{where}: {probe} path {get.get('path')} is not served by the server "
                                f"({sorted(SERVED_PATHS)})")
        annotations = workload["spec"]["template"].get("metadata", {}).get("annotations", {})
        expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics"}
        for key, value in expected.items():
            if str(annotations.get(key)) != value:
                problems.append(f"{where}: pod annotation {key} is {annotations.get(key)!r}, "
                                f"expected {value!r}")
        services = [s for s in k.objects if s.get("kind") == "Service"
                    and s.get("spec", {}).get("clusterIP") != "None"
                    and _matches(s.get("spec", {}).get("selector", {}), _pod_labels(workload))]
        if not any(_container_port(container, p.get("targetPort", p.get("port"))) == port
                   for s in services for p in s["spec"].get("ports", [])):
            problems.append(f"{where}: no Service port reaches the --http port {port}")
    return problems


def published_container_ports(service):
    """Container ports of a compose service's `ports:` (short 'HOST:PORT:CPORT' / 'PORT:CPORT' /
    'CPORT' and long syntax), variables left as they are in the host part."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def check_compose_http(compose):
    problems = []
    for name, service in compose.services.items():
        command = service.get("command") or []
        if not command or command[0] != "conductor-server":
            continue
        where = f"service {name}"
        found, port = _address_problems(where, http_flag(command))
        problems += found
        if port is not None and port not in published_container_ports(service):
            problems.append(f"{where}: publishes no port to the --http port {port} "
                            f"(container ports {published_container_ports(service)})")
    return problems


def exposed_ports(dockerfile):
    """The port numbers the final stage's EXPOSE instructions name."""
    return {int(word.split("/")[0]) for instruction in dockerfile.final.all("EXPOSE")
            for word in instruction.text.split()}


def check_exposed(dockerfile, ports):
    missing = sorted(set(ports) - exposed_ports(dockerfile))
    return [f"{dockerfile.path.name}: EXPOSE lacks port {port}" for port in missing]
