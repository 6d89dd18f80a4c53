"""Predicts the class of one digit image with one trained model, as a prediction item of an
ensemble prediction.

The server hands each prediction item one model's files (model.pkl from train.py) and the
request's rows as predictiondata.csv: 64 pixel values (0..16) per line, a header line or a
leading label column allowed (a line of 65 values is label,pixels). The last image in the file
is predicted, and printed as "PredictedBuffer=<class>", the line the client looks for.
numpy only, so that each of the ensemble's processes starts fast.
"""

import csv
import pickle
import sys

import numpy as np

PIXELS = 64


def last_image(path):
    image = None
    with open(path, newline="") as stream:
        for fields in csv.reader(stream):
            try:
                values = [float(value) for value in fields]
            except ValueError:
                continue  # a header line
            if len(values) in (PIXELS, PIXELS + 1):
                image = values[-PIXELS:]
    if image is None:
        raise SystemExit(f"{path}: no line of {PIXELS} pixel values to predict from")
    return np.asarray(image)


def predict(weights, image):
    """The MLP's forward pass: ReLU hidden layers, then the class with the largest output
    (softmax does not change which one that is)."""
    activation = image / weights["pixel_scale"]
    layers = list(zip(weights["coefs"], weights["intercepts"]))
    for coef, intercept in layers[:-1]:
        activation = np.maximum(activation @ coef + intercept, 0.0)
    coef, intercept = layers[-1]
    return weights["classes"][int(np.argmax(activation @ coef + intercept))]


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "predictiondata.csv"
    model_file = sys.argv[2] if len(sys.argv) > 2 else "model.pkl"
    with open(model_file, "rb") as stream:
        weights = pickle.load(stream)
    print(f"PredictedBuffer={int(predict(weights, last_image(data)))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
