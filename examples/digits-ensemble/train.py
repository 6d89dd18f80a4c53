"""Trains one model of the digits ensemble: a small neural network (scikit-learn's
MLPClassifier, one hidden layer) on 150 images drawn at random from the pool of
digits_split.py, validated on 300 other images of the pool.

Each run draws a fresh seed (printed; `--seed N` repeats a run), so every model of the
ensemble sees other images and starts from other weights: deliberately small, different
models whose majority vote beats each of them. Prints Keras-style progress ("Epoch i/n",
then " - 0s - loss: ... - accuracy: ... - val_accuracy: ..."), which the Conductor client
reads, and leaves in the working folder, which the client sends back:
  model.pkl     the weights as plain numpy arrays (a pickled dict), so that predict.py needs
                numpy only: an ensemble prediction starts one process per model, and
                importing scikit-learn costs about 0.6 s each time;
  metrics.json  accuracy (validation), train_accuracy, loss, epochs, seed, train_size; the
                server copies them into the model's meta.xml.
"""

import argparse
import json
import pickle
import random
import sys
import time
import warnings

import numpy as np

import digits_split

EPOCHS = 10
TRAIN_SIZE = 150
VALIDATION_SIZE = 300
HIDDEN_UNITS = 16


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="repeat the run that printed this seed")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"seed: {seed}", flush=True)
    images, labels = digits_split.pool()
    images = images / 16.0
    order = np.random.default_rng(seed).permutation(len(labels))
    train, validation = order[:TRAIN_SIZE], order[TRAIN_SIZE:TRAIN_SIZE + VALIDATION_SIZE]
    print(f"Train on {len(train)} samples, validate on {len(validation)} samples", flush=True)

    model = MLPClassifier(hidden_layer_sizes=(HIDDEN_UNITS,), batch_size=32,
                          learning_rate_init=0.01, random_state=seed)
    classes = np.arange(digits_split.CLASSES)
    warnings.simplefilter("ignore", ConvergenceWarning)
    for epoch in range(1, args.epochs + 1):
        print(f"Epoch {epoch}/{args.epochs}", flush=True)
        began = time.monotonic()
        model.partial_fit(images[train], labels[train], classes=classes)
        accuracy = float(model.score(images[train], labels[train]))
        val_accuracy = float(model.score(images[validation], labels[validation]))
        print(f" - {round(time.monotonic() - began)}s - loss: {model.loss_:.4f}"
              f" - accuracy: {accuracy:.4f} - val_accuracy: {val_accuracy:.4f}", flush=True)

    weights = {
        "format": "digits-ensemble-mlp/1",
        "coefs": [np.asarray(w) for w in model.coefs_],
        "intercepts": [np.asarray(b) for b in model.intercepts_],
        "classes": np.asarray(model.classes_),
        "pixel_scale": 16.0,
        "seed": seed,
    }
    with open("model.pkl", "wb") as stream:
        pickle.dump(weights, stream)
    metrics = {
        "accuracy": val_accuracy,
        "epochs": args.epochs,
        "loss": float(model.loss_),
        "seed": seed,
        "train_accuracy": accuracy,
        "train_size": len(train),
    }
    with open("metrics.json", "w") as stream:
        json.dump(metrics, stream, indent=2, sort_keys=True)
        stream.write("\n")
    print(f"saved model.pkl and metrics.json (validation accuracy {val_accuracy:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
