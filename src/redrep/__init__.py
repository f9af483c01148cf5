"""redrep: redundant representations in wide neural networks.

Measures whether the last hidden layer of a trained classifier splits into
redundant groups of neurons ("clones"), following Doimo, Glielmo, Goldt and
Laio, "Redundant representations help generalization in wide neural
networks", NeurIPS 2022 (arXiv 2106.03485).
"""

__version__ = "0.1.0"

from .analysis import ChunkAnalysis, default_chunk_sizes  # noqa: E402
from .repset import RepresentationSet  # noqa: E402
from .validation import RedrepError  # noqa: E402

__all__ = ["ChunkAnalysis", "RepresentationSet", "RedrepError", "default_chunk_sizes", "__version__"]
