"""The analysis core: numpy and scipy only.

Chunk draws and the blocks of rows a pass reads (:mod:`.blocks`), the exact chunk accuracies
(:mod:`.accuracy`, with the compiled fast pass), the chunk regressions and the estimator
:class:`~redrep.core.analysis.ChunkAnalysis` (:mod:`.analysis`), the declared metrics
(:mod:`.metrics`), the reading of a curve (:mod:`.summary`), the worker pool (:mod:`.parallel`),
the one device decision (:mod:`.device`) and the input checks (:mod:`.validation`). Nothing here
imports a higher layer; torch is imported only by the CUDA path, and only when it runs.
"""
