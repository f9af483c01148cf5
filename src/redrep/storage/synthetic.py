"""Synthetic representation sets with a known clone structure, and their known critical chunk size.

A layer of ``W = n_latent * n_copies`` neurons in which every one of
``n_latent`` informative directions is carried by ``n_copies`` neurons, each a
copy of the same latent value plus independent noise. It is the structure the
paper describes in wide networks, with the answer known in advance: a chunk
that holds at least one copy of every latent direction reconstructs the whole
layer up to the noise, and classifies like the full readout.

With ``class_means="axes"`` (the set of ``redrep example``) every direction
is needed: classes come in pairs, ``+separation`` and ``-separation`` along
one direction each, so a chunk without a copy of some direction misclassifies
the samples of that direction's two classes, and a chunk with a copy of every
direction fits the training set. Its critical chunk size is then a
coupon-collector size: the smallest chunk that holds every direction with
probability at least the criterion's ``fit_fraction``
(:func:`miss_probability`, :func:`known_critical_size`;
docs/method.md#the-example-and-its-known-answer).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..core.summary import FIT_FRACTION
from ..core.validation import RedrepError, check_float, check_int
from .repset import RepresentationSet

#: How the class means lie in the latent space: random directions of equal norm, or pairs along the axes.
CLASS_MEANS = ("random", "axes")


def miss_probability(n_latent: int, n_copies: int, size: int) -> float:
    """The probability that a uniformly random chunk of ``size`` of the ``W`` neurons misses some direction.

    By inclusion-exclusion over the set ``J`` of directions missed:
    ``sum_{j=1..k} (-1)^(j+1) C(k, j) C(W - j m, w) / C(W, w)`` with ``k = n_latent``,
    ``m = n_copies``, ``W = k m`` and ``w = size``; computed in exact rational arithmetic, then rounded
    once to a float.
    """
    k = check_int(n_latent, "n_latent", min_value=1)
    m = check_int(n_copies, "n_copies", min_value=1)
    W = k * m
    w = check_int(size, "size", min_value=0, max_value=W)
    total = sum((-1) ** (j + 1) * math.comb(k, j) * math.comb(W - j * m, w) for j in range(1, k + 1))
    return float(Fraction(total, math.comb(W, w)))


def known_critical_size(n_latent: int, n_copies: int, fit_fraction: float = FIT_FRACTION) -> int:
    """The smallest chunk size that holds a copy of every direction with probability at least ``fit_fraction``.

    The critical chunk size of a set of ``class_means="axes"`` under the default criterion
    (docs/method.md#the-example-and-its-known-answer): a chunk fits the training set exactly when it holds
    every direction. The probability of holding every direction grows with the size, so the answer is
    found by bisection.
    """
    f = check_float(fit_fraction, "fit_fraction", max_value=1.0)
    if f <= 0:
        raise RedrepError(f"fit_fraction: expected a fraction in (0, 1], found {f}")
    k, m = check_int(n_latent, "n_latent", min_value=1), check_int(n_copies, "n_copies", min_value=1)
    lo, hi = 0, k * m  # P(every direction) is 0 below k neurons and 1 with all of them
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 1.0 - miss_probability(k, m, mid) >= f:
            hi = mid
        else:
            lo = mid
    return hi


def make_clone_set(
    n_train: int = 2000,
    n_test: int = 1000,
    n_latent: int = 16,
    n_copies: int = 8,
    n_classes: int = 10,
    noise: float = 0.3,
    separation: float = 4.0,
    random_state: int | None = 0,
    class_means: str = "random",
) -> RepresentationSet:
    """A representation set of noisy clones of ``n_latent`` class-informative directions.

    Parameters
    ----------
    n_train, n_test : number of samples of each split
    n_latent : number of distinct informative directions
    n_copies : clones per direction; the width is ``n_latent * n_copies``
    n_classes : number of classes (at most ``2 * n_latent`` with ``class_means="axes"``)
    noise : standard deviation of each neuron's independent noise (latent values have unit within-class spread)
    separation : norm of the class means in the latent space
    random_state : seed
    class_means : {"random", "axes"}
        "random": random directions of norm ``separation``; "axes": class ``c`` at
        ``(-1)^c * separation`` along direction ``c // 2`` (pairs of classes along each direction).

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
    if class_means not in CLASS_MEANS:
        raise RedrepError(f"class_means: expected one of {', '.join(CLASS_MEANS)}, found {class_means!r}")
    if class_means == "axes" and n_classes > 2 * n_latent:
        raise RedrepError(
            f"n_classes: expected at most 2 * n_latent = {2 * n_latent} classes along the axes, found {n_classes}"
        )
    rng = np.random.default_rng(random_state)
    if class_means == "axes":
        means = np.zeros((n_classes, n_latent))
        means[np.arange(n_classes), np.arange(n_classes) // 2] = separation * (-1.0) ** np.arange(n_classes)
    else:
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
        "class_means": class_means,
        "seed": random_state,
        "latent_of_neuron": latent_of_neuron.tolist(),
    }
    return RepresentationSet.from_arrays(x_tr, x_te, y_tr, y_te, weight, bias, meta=meta)
