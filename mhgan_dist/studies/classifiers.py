"""Training the shipped scoring networks: the digit classifier and the Fashion-MNIST classifier.

What ``jobs.reproduce digits-classifier`` and ``fashion-classifier`` run: the
network is trained (:mod:`mhgan_dist.quality.networks`) and written with its
record into a folder, by default the shipped location the quality scores load
it from. Needs torch; sklearn's digits, or the Fashion-MNIST IDX files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLASSIFIERS", "ClassifierTraining", "train_classifier"]

CLASSIFIERS = ("digits", "fashion")
_DEFAULT_EPOCHS = {"digits": 20, "fashion": 3}


@dataclass(frozen=True)
class ClassifierTraining:
    """dataset: "digits" or "fashion". output: the folder to write (None: the shipped location). epochs: None for
    20 (digits) or 3 (fashion). data_root: the Fashion-MNIST IDX folder (None: Debian's). threads: torch threads
    of the Fashion-MNIST training."""

    dataset: str
    output: Path | None = None
    epochs: int | None = None
    seed: int = 0
    data_root: str | None = None
    threads: int = 2


def train_classifier(config: ClassifierTraining, log: Callable[[str], None]) -> None:
    """Trains the classifier, writes it, and prints its held-out accuracy and where it went."""
    if config.dataset == "digits":
        _digits(config, log)
    else:
        _fashion(config, log)


def _digits(config: ClassifierTraining, log: Callable[[str], None]) -> None:
    from sklearn.datasets import load_digits

    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.quality.networks import DIGIT_CLASSIFIER_DIR, save_digit_classifier, train_digit_classifier
    from mhgan_dist.training import datasets

    output = config.output or checkpoints_dir() / DIGIT_CLASSIFIER_DIR
    epochs = config.epochs or _DEFAULT_EPOCHS["digits"]
    log(f"training the digit classifier for {epochs} epochs")
    model, record = train_digit_classifier(datasets.digits(), load_digits().target, seed=config.seed, epochs=epochs)
    save_digit_classifier(output, model, record)
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['num_test']} held-out digits; wrote {output}")


def _fashion(config: ClassifierTraining, log: Callable[[str], None]) -> None:
    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.quality.networks import FASHION_CLASSIFIER_DIR, save_fashion_classifier, train_fashion_classifier
    from mhgan_dist.training import datasets

    output = config.output or checkpoints_dir() / FASHION_CLASSIFIER_DIR
    train_images, train_labels = datasets.fashion_mnist(config.data_root, split="train")
    test_images, test_labels = datasets.fashion_mnist(config.data_root, split="test")
    epochs = config.epochs or _DEFAULT_EPOCHS["fashion"]
    log(f"training the Fashion-MNIST classifier on {len(train_labels):,} images for {epochs} epochs")
    model, record = train_fashion_classifier(train_images, train_labels, test_images, test_labels,
                                             seed=config.seed, epochs=epochs, threads=config.threads, log=log)
    save_fashion_classifier(output, model, record, test_images, test_labels)
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['num_test']:,} test images "
          f"({record['train_seconds']:.0f} s); wrote {output}")
