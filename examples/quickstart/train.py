"""Trains one model of the quickstart version: a linear fit of y on x1..x3 from data.csv.

Stands in for a Keras script: it prints the same console lines ("Epoch i/n", then
" - 1s - loss: ... - val_loss: ..."), which the Conductor client reads for progress, and
leaves model.h5 and metrics.json in the working folder, which the client sends back.
Python standard library only. Every run draws a fresh seed (so the models of an ensemble
differ) and prints it; `python3 train.py --seed N` repeats that run exactly.
"""

import argparse
import csv
import json
import random
import sys
import time

EPOCHS = 5
# The fit itself takes milliseconds; pacing each epoch makes a run last about 3 s, so the
# example shows several clients working side by side and epoch durations worth reporting.
EPOCH_SECONDS = 0.6
LEARNING_RATE = 0.05
VALIDATION_SHARE = 0.2


def load_rows(path):
    with open(path, newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        rows = [[float(value) for value in row] for row in reader if row]
    return header[:-1], [(row[:-1], row[-1]) for row in rows]


def predict(weights, features):
    return weights[0] + sum(w * x for w, x in zip(weights[1:], features))


def mean_squared_error(weights, rows):
    return sum((predict(weights, x) - y) ** 2 for x, y in rows) / len(rows)


def train_one_epoch(weights, rows, rng):
    """One pass of stochastic gradient descent, in an order drawn from rng."""
    rng.shuffle(rows)
    for features, target in rows:
        error = predict(weights, features) - target
        weights[0] -= LEARNING_RATE * error
        for i, x in enumerate(features):
            weights[i + 1] -= LEARNING_RATE * error * x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="repeat the run that printed this seed")
    parser.add_argument("--data", default="data.csv")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    print(f"seed: {seed}", flush=True)

    names, rows = load_rows(args.data)
    rng.shuffle(rows)
    validation_size = max(1, int(len(rows) * VALIDATION_SHARE))
    validation, training = rows[:validation_size], rows[validation_size:]
    print(f"Train on {len(training)} samples, validate on {len(validation)} samples", flush=True)

    weights = [rng.gauss(0.0, 0.5) for _ in range(len(names) + 1)]
    for epoch in range(1, EPOCHS + 1):
        print(f"Epoch {epoch}/{EPOCHS}", flush=True)
        epoch_started = time.monotonic()
        train_one_epoch(weights, training, rng)
        loss = mean_squared_error(weights, training)
        val_loss = mean_squared_error(weights, validation)
        time.sleep(max(0.0, EPOCH_SECONDS - (time.monotonic() - epoch_started)))
        seconds = round(time.monotonic() - epoch_started)
        print(f" - {seconds}s - loss: {loss:.4f} - val_loss: {val_loss:.4f}", flush=True)

    # The server, like the original, accepts a result only if it holds a *.h5 file; this one
    # holds JSON, since a linear model needs no HDF5.
    model = {
        "kind": "linear",
        "features": names,
        "intercept": weights[0],
        "coefficients": dict(zip(names, weights[1:])),
        "seed": seed,
    }
    with open("model.h5", "w") as stream:
        json.dump(model, stream, indent=2)
        stream.write("\n")
    metrics = {
        "epochs": EPOCHS,
        "loss": loss,
        "seed": seed,
        "val_loss": val_loss,
    }
    with open("metrics.json", "w") as stream:
        json.dump(metrics, stream, indent=2, sort_keys=True)
        stream.write("\n")
    print(f"saved model.h5 and metrics.json (val_loss {val_loss:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
