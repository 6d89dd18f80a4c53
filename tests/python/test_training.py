"""A small training and an ensemble prediction, entirely inside this process."""

import pytest

import conductor
from conftest import make_version, wait_until


def test_trains_to_target_then_predicts_with_every_model(start_server, start_client, temp_dir):
    server = start_server()
    server.set_reserve(0)
    server.add_version(make_version(temp_dir / "tiny", target_models=3))
    start_client(server, "one")
    start_client(server, "two")

    models = list(server.stored_models(count=3, timeout=60))
    assert len({model.id for model in models}) == 3
    weights = {}
    for model in models:
        assert model.version == "tiny"
        assert (model.folder / "model.pkl").is_file()
        assert model.folder == server.workdir() / "assets" / "tiny" / "models" / model.id
        assert model.meta.node_name in ("one", "two")
        assert model.meta_error == ""
        assert model.meta.epochs == 2
        metrics = dict(model.meta.metrics)
        weights[model.id] = int(metrics["weight"])
        assert metrics["accuracy"] == pytest.approx(weights[model.id] / 1000)

    def stored_and_target():
        status = {v.name: v for v in server.status().versions}["tiny"]
        return status.stored_models, status.target_models

    wait_until(lambda: stored_and_target() == (3, 3), what="status shows 3 of 3 models")

    result = server.predict([[1, 2], [0.5, 1.5]], "tiny", timeout=60)
    assert isinstance(result, conductor.EnsembleResult)
    assert result.complete and result.expected == 3 and not result.failures
    assert {v.model_id: v.value for v in result.values} == {
        model: pytest.approx(weight * 2.0) for model, weight in weights.items()}
    assert result.mean == pytest.approx(2.0 * sum(weights.values()) / 3)

    best = max(weights, key=weights.get)
    top = server.predict("1,1\n", "tiny", top=1, by="accuracy", timeout=60)
    assert [(v.model_id, v.value) for v in top.values] == [(best, pytest.approx(2.0 * weights[best]))]


def test_predicting_for_a_version_without_models_raises(start_server, tiny_version):
    server = start_server()
    server.add_version(tiny_version)
    with pytest.raises(conductor.Error) as raised:
        server.predict([[1, 2]], "tiny")
    assert raised.value.code == conductor.ErrorCode.ARGUMENT


def test_to_csv_writes_one_line_per_row():
    assert conductor.to_csv([[1, 2.5], ("a", "b")]) == "1,2.5\na,b\n"
    assert conductor.to_csv("x,y") == "x,y\n"
    assert conductor.to_csv(["1,2", "3,4"]) == "1,2\n3,4\n"
