"""Library errors arrive as conductor.Error and its subclasses, with the C++ error code."""

import pytest

import conductor


def test_error_classes_mirror_the_cpp_hierarchy():
    assert issubclass(conductor.Error, RuntimeError)
    for name, code in [("ConfigError", "CONFIG"), ("ProtocolError", "PROTOCOL"),
                       ("PackageError", "PACKAGE"), ("ProcessError", "PROCESS"),
                       ("IoError", "IO"), ("TransportError", "TRANSPORT")]:
        cls = getattr(conductor, name)
        assert issubclass(cls, conductor.Error)
        assert cls.code == getattr(conductor.ErrorCode, code)
        assert cls.__module__ == "conductor"


def test_broken_config_raises_config_error_naming_file_and_line(temp_dir):
    (temp_dir / "w" / "config").mkdir(parents=True)
    config = temp_dir / "w" / "config" / "config.xml"
    config.write_text("<ConductorConfiguration>\n  <ReserveNodes>2.5</ReserveNodes>\n"
                      "</ConductorConfiguration>\n")
    with pytest.raises(conductor.ConfigError) as raised:
        conductor.Server(workdir=temp_dir / "w", bind="tcp://127.0.0.1:*", log_to_stdout=False)
    assert raised.value.code == conductor.ErrorCode.CONFIG
    assert f"{config}:2" in str(raised.value)
    assert config.read_text().count("2.5") == 1  # left for the operator to repair


def test_malformed_version_file_raises_config_error(temp_dir):
    broken = temp_dir / "version.xml"
    broken.write_text("<Version>\n<TargetModels>many</TargetModels>\n</Version>\n")
    with pytest.raises(conductor.ConfigError, match="version.xml:2"):
        conductor.load_version_file(broken)


def test_invalid_argument_raises_error_itself_with_argument_code(start_server):
    server = start_server()
    with pytest.raises(conductor.Error) as raised:
        server.set_target("no-such-version", 3)
    assert type(raised.value) is conductor.Error
    assert raised.value.code == conductor.ErrorCode.ARGUMENT
    assert "no-such-version" in str(raised.value)
    with pytest.raises(conductor.Error, match="unknown|not known"):
        server.prediction("no-such-request")
    with pytest.raises(conductor.Error, match="unknown|not known"):
        server.wait_for_prediction("no-such-request", 0.01)
    with pytest.raises(conductor.Error, match="unknown|not known"):
        server.wait_prediction("no-such-request", timeout=1)


def test_second_server_on_one_folder_raises_io_error(start_server, temp_dir):
    start_server("shared")
    with pytest.raises(conductor.IoError):
        conductor.Server(workdir=temp_dir / "shared", bind="tcp://127.0.0.1:*",
                         log_to_stdout=False)


def test_endpoint_in_use_raises_transport_error(start_server, temp_dir):
    first = start_server("first")
    with pytest.raises(conductor.TransportError) as raised:
        conductor.Server(workdir=temp_dir / "second", bind=first.endpoint(), log_to_stdout=False)
    assert raised.value.code == conductor.ErrorCode.TRANSPORT


def test_malformed_server_address_raises_error(temp_dir):
    with pytest.raises(conductor.Error) as raised:
        conductor.Client(server="not an address", workdir=temp_dir / "c", log_to_stdout=False)
    assert raised.value.code == conductor.ErrorCode.ARGUMENT


def test_second_client_on_one_folder_raises_io_error(start_server, start_client, temp_dir):
    server = start_server()
    start_client(server, "c")
    with pytest.raises(conductor.IoError):
        conductor.Client(server=server.endpoint(), workdir=temp_dir / "clients" / "c",
                         log_to_stdout=False)


def test_unknown_option_is_a_type_error(temp_dir):
    with pytest.raises(TypeError):
        conductor.Server(workdir=temp_dir, no_such_option=1)
    with pytest.raises(TypeError):
        conductor.Client(server="127.0.0.1:1", no_such_option=1)
