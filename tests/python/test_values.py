"""The value types and configuration files, as Python sees them."""

import ast
import datetime
import pathlib

import conductor


def test_version_file_round_trip_keeps_every_field(temp_dir):
    version = conductor.Version(
        name="v1", dataset_type=conductor.DatasetType.CARGO2000,
        training_commands=[conductor.Command("/usr/bin/python3", "train.py --fast")],
        prediction_commands=[conductor.Command("/bin/sh", "-c 'echo PredictedBuffer=1'")],
        target_models=7, model_pattern="*.pkl", prediction_output="out.txt")
    conductor.save_version_file(version, temp_dir / "version.xml")
    loaded = conductor.load_version_file(temp_dir / "version.xml")
    assert loaded == version
    assert loaded.training_commands[0].arguments == "train.py --fast"
    assert "target_models=7" in repr(loaded)


def test_configuration_round_trip(temp_dir):
    config = conductor.default_configuration()
    assert config.reserve_nodes == 0.2
    config.reserve_nodes = 0.5
    config.versions = [conductor.Version(name="global", target_models=2)]
    config.current_version = config.versions[0]
    conductor.save_configuration(config, temp_dir / "config.xml")
    assert conductor.load_configuration(temp_dir / "config.xml") == config


def test_options_take_keywords_durations_and_paths():
    options = conductor.ServerOptions(heartbeat_interval=0.25, bind="tcp://127.0.0.1:*")
    assert options.heartbeat_interval == datetime.timedelta(milliseconds=250)
    assert options.workdir is None  # unset, not '.'
    options.workdir = "/tmp/x"
    assert str(options.workdir) == "/tmp/x"
    options.workdir = None
    assert options.workdir is None
    assert options.min_free_bytes == 256 << 20
    assert conductor.ServerOptions(min_free_bytes=0).min_free_bytes == 0
    client = conductor.client_options_from_environment()
    client.server = "host:8080"
    assert client.server == "host:8080"
    predict = conductor.PredictOptions(top=2, by="accuracy")
    assert predict.order == conductor.PredictOptions.Order.AUTO


def test_model_metrics_are_name_value_pairs():
    meta = conductor.ModelMeta()
    meta.metrics = [("accuracy", 0.9), ("loss", 0.3)]
    assert dict(meta.metrics) == {"accuracy": 0.9, "loss": 0.3}


def test_parse_prediction_reads_the_console_line():
    assert conductor.parse_prediction("x\nPredictedBuffer=4\n",
                                      conductor.DEFAULT_PREDICTION_PATTERN) == 4.0
    assert conductor.parse_prediction("nothing", conductor.DEFAULT_PREDICTION_PATTERN) is None


def test_version_requirement_round_trips_and_defaults_to_any(temp_dir):
    version = conductor.Version(name="v", target_models=1, requirement=conductor.Requirement.GPU)
    conductor.save_version_file(version, temp_dir / "version.xml")
    assert "<Requires>gpu</Requires>" in (temp_dir / "version.xml").read_text()
    assert conductor.load_version_file(temp_dir / "version.xml").requirement == \
        conductor.Requirement.GPU
    assert conductor.Version().requirement == conductor.Requirement.ANY


def test_client_options_carry_slots_and_gpus(monkeypatch):
    options = conductor.ClientOptions()
    assert options.slots == 0 and options.gpus == []
    options.slots = 3
    options.gpus = ["0", "1"]
    assert (options.slots, options.gpus) == (3, ["0", "1"])
    assert conductor.split_gpu_list("0, 1,,GPU-8f") == ["0", "1", "GPU-8f"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert conductor.detect_gpus() == ["2", "3"]


def test_client_options_from_environment_read_the_key_files(monkeypatch, temp_dir):
    pair = temp_dir / "client.key"
    public = conductor.public_key_of(pair)  # creates the pair, mode 0600
    server_pub = temp_dir / "server.pub"
    server_pub.write_text("# the server's public key\n" + public + "\n")
    for name in ("CONDUCTOR_SERVER_KEY", "CONDUCTOR_SERVER_KEY_FILE", "CONDUCTOR_KEY_PAIR_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert conductor.client_options_from_environment().server_key == ""
    monkeypatch.setenv("CONDUCTOR_SERVER_KEY_FILE", str(server_pub))
    monkeypatch.setenv("CONDUCTOR_KEY_PAIR_FILE", str(pair))
    options = conductor.client_options_from_environment()
    assert options.server_key == public
    assert options.key_file == pair
    # A named key pair is never created: a Secret that was not mounted is an error, by name.
    monkeypatch.setenv("CONDUCTOR_KEY_PAIR_FILE", str(temp_dir / "missing.key"))
    try:
        conductor.client_options_from_environment()
    except conductor.Error as e:
        assert "CONDUCTOR_KEY_PAIR_FILE" in str(e) and "missing.key" in str(e)
    else:
        raise AssertionError("a missing CONDUCTOR_KEY_PAIR_FILE was accepted")


def test_type_stub_is_valid_python():
    stub = pathlib.Path(conductor.__file__).with_name("__init__.pyi")
    tree = ast.parse(stub.read_text(), filename=str(stub))
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"Server", "ServerOptions", "Client"} <= classes
