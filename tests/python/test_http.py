"""The server's HTTP endpoint from Python: the `http` option, http_endpoint(), and what
/metrics and /api/status answer while an embedded client trains."""

import json
import urllib.request

import pytest

import conductor
from conftest import wait_until


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def metric(text, sample):
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split(" ")[-1])
    raise AssertionError(f"no sample {sample} in /metrics")


def test_http_is_off_unless_asked_for(start_server):
    server = start_server()
    assert conductor.ServerOptions().http == ""
    assert server.http_endpoint() == ""


def test_http_endpoint_reports_the_training_of_an_embedded_client(start_server, start_client,
                                                                  tiny_version):
    server = start_server(http="127.0.0.1:0")
    url = server.http_endpoint()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    server.set_reserve(0)
    server.add_version(tiny_version)
    start_client(server)
    models = list(server.stored_models(count=2, timeout=60))
    assert len(models) == 2

    def metrics():
        status, content_type, body = get(url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        return body

    wait_until(lambda: metric(metrics(), 'conductor_items_completed_total{type="training"}') == 2,
               what="two completed items in /metrics")
    text = metrics()
    assert metric(text, 'conductor_version_models_stored{version="tiny"}') == 2
    assert metric(text, 'conductor_version_models_target{version="tiny"}') == 2
    assert metric(text, 'conductor_transfer_bytes_total{direction="received"}') > 0
    status, content_type, body = get(url + "/api/status")
    assert content_type == "application/json"
    document = json.loads(body)
    assert document["server"]["http"] == url
    assert document["server"]["endpoint"] == server.endpoint()
    assert [(v["name"], v["stored"], v["target"]) for v in document["versions"]] == [("tiny", 2, 2)]
    assert [c["host"] for c in document["clients"]] == ["client"]
    assert any("stored from client" in line for line in document["log"])


def test_a_malformed_http_address_is_refused(temp_dir):
    with pytest.raises(conductor.Error, match="HTTP address 'nine' refused"):
        conductor.Server(workdir=temp_dir / "w", bind="tcp://127.0.0.1:*", http="nine",
                         log_to_stdout=False)
