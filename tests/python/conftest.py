"""Fixtures for the conductor module's tests: private temporary folders, a tiny version whose
training and prediction take milliseconds, and embedded servers and clients that are always
closed. Run with the build tree's package on the path:
    PYTHONPATH=build/bindings/python /usr/bin/python3 -m pytest tests/python
"""

import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import conductor

# The training writes model.pkl (a text file: the name only has to match ModelPattern) with a
# weight, and metrics.json with an accuracy that grows with the weight, so models differ and
# rank. The prediction prints weight * (sum of the last row), which the tests recompute.
TRAIN_PY = textwrap.dedent("""\
    import json, random
    weight = random.SystemRandom().randrange(1, 1000)
    for epoch in (1, 2):
        print(f"Epoch {epoch}/2", flush=True)
        print(" - 0s - loss: 0.5 - val_loss: 0.5", flush=True)
    with open("model.pkl", "w") as stream:
        stream.write(str(weight))
    with open("metrics.json", "w") as stream:
        json.dump({"accuracy": weight / 1000, "weight": weight}, stream)
    """)
PREDICT_PY = textwrap.dedent("""\
    import csv
    with open("model.pkl") as stream:
        weight = int(stream.read())
    with open("predictiondata.csv", newline="") as stream:
        row = [float(value) for value in list(csv.reader(stream))[-1]]
    print(f"PredictedBuffer={weight * sum(row)}", flush=True)
    """)


def make_version(folder, target_models=2):
    """Writes a version folder `folder` (train.py, predict.py, version.xml); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(TRAIN_PY)
    (folder / "predict.py").write_text(PREDICT_PY)
    version = conductor.Version(
        name=folder.name,
        training_commands=[conductor.Command(sys.executable, "-B train.py")],
        prediction_commands=[conductor.Command(sys.executable, "-B predict.py")],
        target_models=target_models,
        model_pattern="*.pkl",
    )
    conductor.save_version_file(version, folder / "version.xml")
    return folder


def wait_until(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def temp_dir():
    """A fresh folder under the system's temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="conductor-pytest-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tiny_version(temp_dir):
    return make_version(temp_dir / "tiny")


@pytest.fixture
def start_server(temp_dir):
    """start_server(name="server", **options): a started Server on a free loopback port,
    closed at the end of the test."""
    servers = []

    def start(name="server", **options):
        options.setdefault("bind", "tcp://127.0.0.1:*")
        options.setdefault("log_to_stdout", False)
        options.setdefault("heartbeat_interval", 0.2)
        server = conductor.Server(workdir=temp_dir / name, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in reversed(servers):
        server.close()


@pytest.fixture
def start_client(temp_dir):
    """start_client(server, name): a started Client of `server`, closed at the end."""
    clients = []

    def start(server, name="client"):
        client = conductor.Client(server=server.endpoint(), workdir=temp_dir / "clients" / name,
                                  host_name=name, log_to_stdout=False, heartbeat_interval=0.2)
        clients.append(client)
        client.start()
        return client

    yield start
    for client in reversed(clients):
        client.close()
