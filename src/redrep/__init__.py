"""redrep: redundant representations in wide neural networks.

Measures whether the last hidden layer of a trained classifier splits into
redundant groups of neurons ("clones"), following Doimo, Glielmo, Goldt and
Laio, "Redundant representations help generalization in wide neural
networks", NeurIPS 2022 (arXiv 2106.03485).
"""

__version__ = "0.1.0"

from .core.validation import RedrepError  # noqa: E402

# imported on first use, so that `import redrep.cli` (and `redrep --help`) stays light
_LAZY = {
    "ChunkAnalysis": "core.analysis",
    "Criterion": "core.summary",
    "default_chunk_sizes": "core.analysis",
    "RepresentationSet": "storage.repset",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ChunkAnalysis", "Criterion", "RepresentationSet", "RedrepError", "default_chunk_sizes", "__version__"]
