"""Synthetic representation sets with a known clone structure.

A layer of ``W = n_latent * n_copies`` neurons in which every one of
``n_latent`` informative directions is carried by ``n_copies`` neurons, each a
copy of the same latent value plus independent noise. It is the structure the
paper describes in wide networks, with the answer known in advance: a chunk
that holds at least one copy of every latent direction reconstructs the whole
layer up to the noise, and classifies like the full readout.
"""

from __future__ import annotations

import numpy as np

from ..core.validation import check_float, check_int
from .repset import RepresentationSet


def make_clone_set(
    n_train: int = 2000,
    n_test: int = 1000,
    n_latent: int = 16,
    n_copies: int = 8,
    n_classes: int = 10,
    noise: float = 0.3,
    separation: float = 4.0,
    random_state: int | None = 0,
) -> RepresentationSet:
    """A representation set of noisy clones of ``n_latent`` class-informative directions.

    Parameters
    ----------
    n_train, n_test : number of samples of each split
    n_latent : number of distinct informative directions
    n_copies : clones per direction; the width is ``n_latent * n_copies``
    n_classes : number of classes
    noise : standard deviation of each neuron's independent noise (latent values have unit within-class spread)
    separation : norm of the class means in the latent space
    random_state : seed

    Returns
    -------
    RepresentationSet with features of shape (n, n_latent * n_copies), the
    readout of the nearest-class-mean rule replicated over the copies (its
    weight divided by ``n_copies``), zero bias, and ``meta["latent_of_neuron"]``.
    """
    n_train = check_int(n_train, "n_train", min_value=1)
    n_test = check_int(n_test, "n_test", min_value=2)
    n_latent = check_int(n_latent, "n_latent", min_value=1)
    n_copies = check_int(n_copies, "n_copies", min_value=1)
    n_classes = check_int(n_classes, "n_classes", min_value=2)
    noise = check_float(noise, "noise", min_value=0.0)
    separation = check_float(separation, "separation", min_value=0.0)
    rng = np.random.default_rng(random_state)
    means = rng.normal(size=(n_classes, n_latent))
    # equal norms make the nearest-mean rule a pure dot product (no bias)
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    latent_of_neuron = np.repeat(np.arange(n_latent), n_copies)
    perm = rng.permutation(latent_of_neuron.size)  # clones are not adjacent
    latent_of_neuron = latent_of_neuron[perm]

    def sample(n):
        y = rng.integers(0, n_classes, size=n)
        z = means[y] + rng.normal(size=(n, n_latent))
        x = z[:, latent_of_neuron] + noise * rng.normal(size=(n, latent_of_neuron.size))
        return x.astype(np.float32), y

    x_tr, y_tr = sample(n_train)
    x_te, y_te = sample(n_test)
    weight = (means[:, latent_of_neuron] / n_copies).astype(np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    meta = {
        "dataset": "synthetic-clones",
        "n_latent": n_latent,
        "n_copies": n_copies,
        "noise": noise,
        "separation": separation,
        "seed": random_state,
        "latent_of_neuron": latent_of_neuron.tolist(),
    }
    return RepresentationSet.from_arrays(x_tr, x_te, y_tr, y_te, weight, bias, meta=meta)
