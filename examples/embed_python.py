#!/usr/bin/python3
"""Trains an ensemble of digit classifiers with a Conductor server and clients embedded in
this process, then lets the ensemble vote on images none of the models has seen.

Steps: start a server on 127.0.0.1 (any free port), add the version examples/digits-ensemble,
start local clients, print each model as the server accepts it (with the validation accuracy
its training reported), then send held-out images one per prediction request; every model
answers each request, the majority vote is the ensemble's answer. Prints the ensemble's
accuracy next to the best and the median single model on the same images.

    /usr/bin/python3 examples/embed_python.py [--models 8] [--clients 3] [--rows 60]
                                              [--workdir DIR] [--timeout 600]

Needs the conductor module (scripts/install-python, or PYTHONPATH=build/bindings/python) and
Debian's python3-sklearn. Ctrl-C stops the clients and the server and exits.
"""

import argparse
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time

import conductor

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION_DIR = os.path.join(HERE, "digits-ensemble")
VERSION = "digits-ensemble"
sys.path.insert(0, VERSION_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the version folder, which add_version copies
import digits_split  # noqa: E402  (lives in the version folder, shared with train.py)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="models to train (default 8)")
    parser.add_argument("--clients", type=int, default=3, help="local clients (default 3)")
    parser.add_argument("--rows", type=int, default=60,
                        help="held-out images to predict, one request each (default 60)")
    parser.add_argument("--workdir", help="for the server and client folders; must be absent or "
                        "hold hidden files only (default: a temporary folder, removed at the end)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for each model and for the predictions")
    args = parser.parse_args()
    if args.models < 1 or args.clients < 1 or args.rows < 1:
        parser.error("--models, --clients and --rows must be at least 1")
    return args


@contextlib.contextmanager
def working_folder(path):
    if path is None:
        with tempfile.TemporaryDirectory(prefix="conductor-digits-") as folder:
            yield folder
        return
    if os.path.exists(path) and any(not name.startswith(".") for name in os.listdir(path)):
        raise SystemExit(f"embed_python: {path} is not empty; name an empty or new folder")
    os.makedirs(path, exist_ok=True)
    yield os.path.abspath(path)


def train(server, count, timeout):
    """Prints each accepted model as it arrives; returns {model id: validation accuracy}."""
    accuracies = {}
    for number, model in enumerate(server.stored_models(count=count, timeout=timeout), 1):
        metrics = dict(model.meta.metrics)
        accuracies[model.id] = metrics.get("accuracy", float("nan"))
        print(f"  model {number}/{count}  {model.id}  accuracy {accuracies[model.id]:.4f}"
              f"  train_accuracy {metrics.get('train_accuracy', float('nan')):.4f}"
              f"  loss {metrics.get('loss', float('nan')):.4f}"
              f"  ({model.meta.node_name}, {model.meta.duration_seconds:.1f} s)", flush=True)
    return accuracies


def majority(values):
    """The most frequent class; a tie goes to the smaller class, so the vote is repeatable."""
    counts = collections.Counter(values)
    return max(counts, key=lambda label: (counts[label], -label))


def predict(server, images, models, timeout):
    """One request per image; returns [{model id: class}] per image. A request queues one
    item per model and the server refuses requests beyond PREDICTION_QUEUE_LIMIT queued
    items, so at most half that many items are in flight at a time."""
    window = max(1, conductor.PREDICTION_QUEUE_LIMIT // models // 2)
    pending = collections.deque()
    answers = []
    for image in images:
        if len(pending) == window:
            answers.append(collect(server, pending.popleft(), timeout))
        pending.append(server.start_prediction([[int(p) for p in image]], VERSION))
    answers.extend(collect(server, request, timeout) for request in pending)
    return answers


def collect(server, request, timeout):
    result = server.wait_prediction(request, timeout)
    for failure in result.failures:
        print(f"  warning: model {failure.model_id} gave no answer: {failure.reason}")
    return {value.model_id: int(round(value.value)) for value in result.values}


def report(accuracies, answers, labels):
    correct = {model: 0 for model in accuracies}
    ensemble_correct = 0
    for votes, label in zip(answers, labels):
        for model, value in votes.items():
            correct[model] += value == label
        ensemble_correct += bool(votes) and majority(votes.values()) == label
    rows = len(labels)
    held_out = {model: correct[model] / rows for model in accuracies}

    print(f"\n  {'model':36}  {'validation':>10}  {'held-out':>8}")
    for model in sorted(accuracies, key=held_out.get, reverse=True):
        print(f"  {model:36}  {accuracies[model]:10.4f}  {held_out[model]:8.4f}")
    best = max(held_out, key=held_out.get)
    print(f"\nEnsemble result on {rows} held-out images ({len(accuracies)} models, majority vote):")
    print(f"  ensemble (majority vote)  accuracy {ensemble_correct / rows:.4f}")
    print(f"  best single model         accuracy {held_out[best]:.4f}  ({best})")
    print(f"  median single model       accuracy {statistics.median(held_out.values()):.4f}")


def main():
    args = parse_args()
    images, labels = digits_split.held_out()
    images, labels = images[:args.rows], [int(label) for label in labels[:args.rows]]

    with working_folder(args.workdir) as folder, contextlib.ExitStack() as running:
        server = running.enter_context(conductor.Server(
            workdir=os.path.join(folder, "server"), bind="tcp://127.0.0.1:*",
            log_to_stdout=False))
        # Every client trains; predictions then go to whichever client is idle.
        server.set_reserve(0)
        server.add_version(VERSION_DIR, VERSION)
        server.set_target(VERSION, args.models)
        for number in range(1, args.clients + 1):
            running.enter_context(conductor.Client(
                server=server.endpoint(), workdir=os.path.join(folder, "clients", str(number)),
                host_name=f"local-{number}", log_to_stdout=False))
        print(f"Training {args.models} models of {VERSION} with {args.clients} local clients"
              f" (server {server.endpoint()}, folder {folder})", flush=True)
        began = time.monotonic()
        accuracies = train(server, args.models, args.timeout)
        print(f"Trained {len(accuracies)} models in {time.monotonic() - began:.0f} s; models in"
              f" {os.path.join(server.workdir(), 'assets', VERSION, 'models')}", flush=True)

        print(f"\nPredicting {args.rows} held-out images, one request each ...", flush=True)
        began = time.monotonic()
        answers = predict(server, images, len(accuracies), args.timeout)
        print(f"{args.rows} ensemble predictions in {time.monotonic() - began:.0f} s", flush=True)
        report(accuracies, answers, labels)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("embed_python: interrupted; server and clients stopped", file=sys.stderr)
        sys.exit(130)
    except (conductor.Error, TimeoutError) as error:
        print(f"embed_python: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
