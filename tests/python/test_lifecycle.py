"""Server and Client lifecycle: start, stop, close, context managers, run() and Ctrl-C."""

import os
import signal
import threading
import time

import pytest

import conductor
from conftest import wait_until


def test_server_context_manager_serves_then_releases_port_and_folder(temp_dir):
    with conductor.Server(workdir=temp_dir / "w", bind="tcp://127.0.0.1:*",
                          log_to_stdout=False) as server:
        endpoint = server.endpoint()
        assert endpoint.startswith("tcp://127.0.0.1:")
        assert server.workdir() == temp_dir / "w"
        assert server.status().clients == 0
        assert (temp_dir / "w" / "config" / "config.xml").is_file()
    assert server.closed
    # The same folder and port are free again at once: close() joined the server's thread.
    with conductor.Server(workdir=temp_dir / "w", bind=endpoint, log_to_stdout=False) as again:
        assert again.endpoint() == endpoint


def test_client_is_counted_while_running_and_leaves_on_close(start_server, start_client):
    server = start_server()
    client = start_client(server)
    wait_until(lambda: server.status().clients == 1, what="client connected")
    client.close()
    assert client.closed
    wait_until(lambda: server.status().clients == 0, what="client gone")


def test_run_returns_when_another_thread_calls_stop(temp_dir):
    server = conductor.Server(workdir=temp_dir / "w", bind="tcp://127.0.0.1:*",
                              log_to_stdout=False)
    stopper = threading.Timer(0.3, server.stop)
    stopper.start()
    began = time.monotonic()
    server.run()
    assert 0.25 < time.monotonic() - began < 5
    server.close()


def test_ctrl_c_ends_server_run_with_keyboard_interrupt(temp_dir):
    server = conductor.Server(workdir=temp_dir / "w", bind="tcp://127.0.0.1:*",
                              log_to_stdout=False)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        server.run()
    assert time.monotonic() - began < 5
    server.close()


def test_ctrl_c_ends_client_run_with_keyboard_interrupt(start_server, temp_dir):
    server = start_server()
    client = conductor.Client(server=server.endpoint(), workdir=temp_dir / "c",
                              log_to_stdout=False)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        client.run()
    client.close()


def test_ctrl_c_interrupts_waiting_for_models(start_server):
    server = start_server()
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in server.stored_models():
            pass
    assert time.monotonic() - began < 5


def test_starting_twice_raises_instead_of_aborting(start_server):
    server = start_server()
    with pytest.raises(conductor.Error, match="already called"):
        server.start()
    with pytest.raises(conductor.Error, match="already called"):
        server.run()


def test_calls_after_close_raise_and_close_is_idempotent(start_server):
    server = start_server()
    server.close()
    server.close()
    server.stop()
    with pytest.raises(conductor.Error, match="closed"):
        server.status()


def test_stored_models_times_out_when_nothing_arrives(start_server):
    server = start_server()
    assert server.next_stored_model(0.05) is None
    with pytest.raises(TimeoutError):
        next(server.stored_models(timeout=0.2))


def test_curve_server_admits_a_client_whose_key_it_lists(start_server, temp_dir):
    server = start_server(security=conductor.ServerOptions.Security.CURVE)
    assert len(server.public_key()) == 40
    client_dir = temp_dir / "curve-client"
    key = conductor.public_key_of(conductor.default_client_key_file(client_dir))
    conductor.default_authorized_keys(server.workdir()).write_text(key + " curve-client\n")
    with conductor.Client(server=server.endpoint(), workdir=client_dir, log_to_stdout=False,
                          server_key=server.public_key()) as client:
        assert client.public_key() == key
        wait_until(lambda: server.status().clients == 1, what="CURVE client connected")


def test_loopback_server_runs_without_curve_by_default(start_server):
    assert start_server().public_key() == ""
