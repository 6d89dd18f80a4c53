"""Client slots and version requirements through the Python API: a client's slots and GPUs,
an item that waits for a GPU client and Server.explain saying so, set_requirement."""

import json

import pytest

import conductor
from conftest import make_version, wait_until


def test_a_cpu_client_has_its_slots_and_a_gpu_client_one_per_gpu(start_server, temp_dir):
    server = start_server()
    with conductor.Client(server=server.endpoint(), workdir=temp_dir / "cpu", slots=3,
                          log_to_stdout=False) as cpu:
        assert cpu.slots() == 3
        assert cpu.gpus() == []
    with conductor.Client(server=server.endpoint(), workdir=temp_dir / "gpu",
                          processing_unit="gpu", gpus=["0", "1"], log_to_stdout=False) as gpu:
        assert gpu.slots() == 2
        assert gpu.gpus() == ["0", "1"]
    with pytest.raises(conductor.Error, match="one item per GPU"):
        conductor.Client(server=server.endpoint(), workdir=temp_dir / "bad",
                         processing_unit="gpu", gpus=["0"], slots=2)
    with pytest.raises(conductor.Error, match="GPUs given to a cpu client"):
        conductor.Client(server=server.endpoint(), workdir=temp_dir / "bad", gpus=["0"])


def test_explain_says_a_gpu_item_waits_for_a_gpu_client_until_the_requirement_goes(
        start_server, start_client, temp_dir):
    server = start_server()
    server.set_reserve(0)
    version = make_version(temp_dir / "needs-gpu", target_models=1)
    server.add_version(version)
    server.set_requirement("needs-gpu", conductor.Requirement.GPU)
    assert conductor.load_version_file(server.workdir() / "assets" / "needs-gpu" / "version.xml") \
        .requirement == conductor.Requirement.GPU
    start_client(server, "cpu-only")
    wait_until(lambda: server.status().clients == 1, what="client connected")
    item = json.loads(server.control("status"))["queued"][0]["id"]

    explanation = server.explain(item[:8])
    assert explanation.state == "queued"
    assert explanation.text.startswith(
        "queued: version needs-gpu requires gpu; the only connected client has no GPU")
    with pytest.raises(conductor.Error, match="is not known"):
        server.explain("ffffffff-no-such-item")

    server.set_requirement("needs-gpu", conductor.Requirement.ANY)
    assert server.next_stored_model(30.0).id == item
    with pytest.raises(conductor.Error, match="is not known"):
        server.explain(item)
