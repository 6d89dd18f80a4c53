"""The run both local deployments (compose services, Kubernetes pods) go through: an operator
adds the quickstart version and asks for two models; a CPU and a GPU client train them over
CurveZMQ, each reporting what its image says it is."""

import re
import socket
import xml.etree.ElementTree as ElementTree

from containers import http_get, wait_for

MODELS = 2


def probe_port(endpoint, times=3):
    """Connects and hangs up, as a kubelet tcpSocket probe does."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    for _ in range(times):
        with socket.create_connection((host, int(port)), timeout=5):
            pass


def check_http(url, probe_paths, metrics_path="/metrics", completed=None):
    """GETs what the kubelet's probes and Prometheus would from the server's HTTP endpoint at
    `url`: every probe path answers 200, the scrape path Prometheus text with conductor_
    metrics; with `completed`, that many training items are counted as completed."""
    for path in probe_paths:
        status, body = http_get(url + path)
        assert status == 200, (path, status, body)
    status, body = http_get(url + metrics_path)
    assert status == 200, (metrics_path, status, body)
    samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert any(re.match(r"conductor_\w+", name) for name in samples), body[:500]
    if completed is not None:
        assert float(samples['conductor_items_completed_total{type="training"}']) == completed, body
    return samples


def read_meta(folder):
    root = ElementTree.parse(folder / "meta.xml").getroot()
    return {child.tag: (child.text or "") for child in root}


def train_quickstart(endpoint, server, clients, conductorctl, models_folder, version_folder, slots=None):
    """Runs the scenario against the server at `endpoint`; returns the stored models' meta.xml
    fields. `conductorctl(*words)` returns the --json reply; `clients` are Containers not yet
    started; `version_folder` is the quickstart example as conductorctl sees it; `slots`, when
    given, the slots each type of client must report (cpu, gpu -> count)."""
    probe_port(endpoint)  # probes before any peer: the server must shrug them off
    conductorctl("add-version", version_folder)
    conductorctl("set-reserve", "0")  # no client kept back for predictions
    conductorctl("set-target", "quickstart", str(MODELS))
    for client in clients:
        client.start()

    def connected():
        listed = conductorctl("status")["clients"]
        return listed if len(listed) == len(clients) else None

    listed = wait_for(connected, 60, "both clients connected: " + " | ".join(c.output() for c in clients))
    reported = sorted((c["type"], c["os"], c["version"]) for c in listed)
    expected = sorted((c.env["CONDUCTOR_TYPE"], c.env["CONDUCTOR_OS"], c.env["CONDUCTOR_VERSION"])
                      for c in clients)
    assert reported == expected  # CONDUCTOR_TYPE, _OS and _VERSION from each image's ENV
    if slots is not None:
        assert {c["type"]: c["slots"] for c in listed} == slots, listed

    def stored():
        found = [f for f in models_folder.glob("*") if (f / "meta.xml").exists()] \
            if models_folder.exists() else []
        return found if len(found) >= MODELS else None

    folders = wait_for(stored, 120, f"{MODELS} models stored: " + server.output()[-2000:])
    models = [read_meta(folder) for folder in folders]
    for meta in models:  # meta.xml tells which image trained the model
        assert (meta["ProcessingUnit"], meta["OperatingSystem"], meta["ContainerVersion"]) in expected
    return models
