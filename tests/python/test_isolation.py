"""Two Servers in one process share nothing: ports, folders, versions, models, settings."""

import conductor
from conftest import make_version


def test_two_servers_in_one_process_keep_separate_state(start_server, start_client, temp_dir):
    first = start_server("first")
    second = start_server("second")
    assert first.endpoint() != second.endpoint()
    assert first.workdir() != second.workdir()

    first.set_reserve(0)
    first.add_version(make_version(temp_dir / "only-first", target_models=1))
    start_client(first, "worker")
    model = next(first.stored_models(timeout=60))
    assert model.version == "only-first"

    assert [v.name for v in first.status().versions] == ["only-first"]
    assert second.status().versions == []
    assert second.status().clients == 0
    assert second.next_stored_model(0.2) is None
    assert not (second.workdir() / "assets" / "only-first").exists()
    second_config = conductor.load_configuration(second.workdir() / "config" / "config.xml")
    assert second_config.reserve_nodes == 0.2
    first_config = conductor.load_configuration(first.workdir() / "config" / "config.xml")
    assert first_config.reserve_nodes == 0
