"""The one split of scikit-learn's digits data set (1797 8x8 images, classes 0-9) that the
digits-ensemble example uses everywhere: every fifth image (index % 5 == 0, 360 images) is
held out, never trained on, for judging the ensemble; the other 1437 are the pool that each
training run draws its own random training and validation rows from.

    python3 digits_split.py [--rows N]   prints the first N held-out images (default all) as
                                         CSV lines "label,pixel0,...,pixel63" for programs
                                         without scikit-learn (examples/embed_cpp)
"""

import argparse
import sys

HOLD_OUT_EVERY = 5
PIXELS = 64
CLASSES = 10


def load():
    """(images, labels) as numpy arrays: images of shape (1797, 64), pixels 0..16."""
    from sklearn.datasets import load_digits  # ships inside scikit-learn: no download

    return load_digits(return_X_y=True)


def is_held_out(index):
    return index % HOLD_OUT_EVERY == 0


def held_out():
    images, labels = load()
    keep = [i for i in range(len(labels)) if is_held_out(i)]
    return images[keep], labels[keep]


def pool():
    images, labels = load()
    keep = [i for i in range(len(labels)) if not is_held_out(i)]
    return images[keep], labels[keep]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="how many held-out images (default: all 360)")
    args = parser.parse_args()
    images, labels = held_out()
    count = len(labels) if args.rows is None else min(args.rows, len(labels))
    for image, label in zip(images[:count], labels[:count]):
        print(",".join([str(int(label))] + [str(int(pixel)) for pixel in image]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
