"""Predicts y with one trained quickstart model, as a prediction item of an ensemble.

The server hands each prediction item one model, renamed model-latest.h5, and the request's
rows as predictiondata.csv: x1,x2,x3 per line, a header line allowed. This prints the
prediction for the last row as "PredictedBuffer=<value>", the line the client looks for.
"""

import csv
import json
import sys


def last_row(path, width):
    row = None
    with open(path, newline="") as stream:
        for fields in csv.reader(stream):
            try:
                row = [float(value) for value in fields[:width]]
            except ValueError:
                continue  # the header line
    if row is None or len(row) < width:
        raise SystemExit(f"{path}: no row of {width} numbers to predict from")
    return row


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "predictiondata.csv"
    model_file = sys.argv[2] if len(sys.argv) > 2 else "model-latest.h5"
    with open(model_file) as stream:
        model = json.load(stream)
    names = model["features"]
    features = last_row(data, len(names))
    value = model["intercept"] + sum(
        model["coefficients"][name] * x for name, x in zip(names, features))
    print(f"PredictedBuffer={value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
