"""The metrics of a chunk analysis, declared in one place.

A metric is one number per random chunk, averaged per chunk size. Every
consumer (the tidy ``results.csv``, the ``.npy`` arrays, the curves of
:mod:`redrep.core.summary`, panel (c) of the figure, the report's tables and the
command-line printout) loops over :data:`METRICS` instead of naming metrics
itself, so a new metric is one more entry here plus the code that computes it
in :class:`redrep.core.analysis.ChunkAnalysis`.

Definitions: ``docs/method.md#quantities``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The passes of :class:`~redrep.core.analysis.ChunkAnalysis` that produce metrics.
PASSES = ("accuracy", "regression")
#: What a stored value is: an accuracy (shown as the error 1 - value), a fraction (R²), or a correlation.
KINDS = ("accuracy", "fraction", "correlation")
#: Panels of the three-panel figure and their axes; "" for a metric the figure does not draw.
PANELS = ("", "a", "b", "c")
AXES = ("left", "right")


@dataclass(frozen=True)
class Metric:
    """One declared metric.

    Attributes
    ----------
    name : str, the ``metric`` column of ``results.csv`` (several splits may share a name)
    split : {"train", "test"}, the ``split`` column
    computed_by : {"accuracy", "regression"}, the pass of the analysis that produces it
    kind : {"accuracy", "fraction", "correlation"}; accuracies are stored as accuracies and
        shown as errors (1 - value) in curves, figures and tables
    curve : str, the attribute of :class:`redrep.core.summary.ChunkCurves` holding it (errors for accuracies)
    label : str, short label of tables and legends (what is shown: an error for an accuracy)
    panel : {"", "a", "b", "c"}, the panel of the three-panel figure that draws it
    axis : {"left", "right"}, the axis of that panel
    digits : int, significant digits in tables
    description : str, one sentence: what it is, for tooltips and docs
    authors_file : str or None, the authors' ``.npy`` name (their plotting script reads it)
    required : bool, a results folder without it cannot be summarized (older folders may lack the others)
    anchor : str, the section of ``docs/method.md`` defining it
    """

    name: str
    split: str
    computed_by: str
    kind: str
    curve: str
    label: str
    panel: str = ""
    axis: str = "left"
    digits: int = 5
    description: str = ""
    authors_file: str | None = None
    required: bool = False
    anchor: str = "quantities"

    def __post_init__(self):
        # a declaration error is a programming error: fail loudly at import
        assert self.split in ("train", "test"), self.split
        assert self.computed_by in PASSES, self.computed_by
        assert self.kind in KINDS, self.kind
        assert self.panel in PANELS and self.axis in AXES, (self.panel, self.axis)

    @property
    def key(self) -> tuple[str, str]:
        """``(name, split)``, the key of :attr:`ChunkAnalysis.values_ <redrep.core.analysis.ChunkAnalysis>`."""
        return (self.name, self.split)

    @property
    def file_name(self) -> str:
        """The neutral ``.npy`` name written for every set: ``<name>_<split>.npy``."""
        return f"{self.name}_{self.split}.npy"

    @property
    def shown_as_error(self) -> bool:
        return self.kind == "accuracy"

    def shown(self, value):
        """The value as curves and tables show it (the error for an accuracy); works on arrays."""
        return 1.0 - value if self.shown_as_error else value


#: Every metric, in output order.
METRICS: tuple[Metric, ...] = (
    Metric(
        "accuracy",
        "train",
        "accuracy",
        "accuracy",
        curve="train_error",
        label="training error",
        panel="b",
        description="Training error of the trained readout restricted to the chunk's neurons.",
        authors_file="acc_chunk_c10_train_wr28_8.npy",
        required=True,
        anchor="chunk-accuracy",
    ),
    Metric(
        "accuracy",
        "test",
        "accuracy",
        "accuracy",
        curve="test_error",
        label="test error",
        panel="a",
        description="Test error of the trained readout restricted to the chunk's neurons.",
        authors_file="acc_chunk_c10_test_wr28_8.npy",
        required=True,
        anchor="chunk-accuracy",
    ),
    Metric(
        "r2",
        "test",
        "regression",
        "fraction",
        curve="r2",
        label="R²",
        panel="c",
        axis="left",
        description="R² of the ridge reconstruction of all W neurons from the chunk, fitted and scored on the test "
        "set.",
        authors_file="r2_c10_test_wr28_8.npy",
        required=True,
        anchor="r2",
    ),
    Metric(
        "r2_heldout",
        "test",
        "regression",
        "fraction",
        curve="r2_heldout",
        label="R² held out",
        panel="c",
        axis="left",
        description="R² held out: ridge fitted on the training features, scored on the test features.",
        anchor="held-out-r2",
    ),
    Metric(
        "mean_corr",
        "test",
        "regression",
        "correlation",
        curve="mean_corr",
        label="mean corr. (all pairs)",
        panel="c",
        axis="right",
        digits=4,
        description="Mean absolute correlation of the reconstruction residuals over all pairs of neurons "
        "(the published definition).",
        authors_file="mean_corr_c10_test_wr28_8.npy",
        anchor="residual-correlations",
    ),
    Metric(
        "mean_corr_outside",
        "test",
        "regression",
        "correlation",
        curve="mean_corr_outside",
        label="mean corr. (outside chunk)",
        panel="c",
        axis="right",
        digits=4,
        description="Mean absolute correlation of the reconstruction residuals over the pairs of neurons "
        "outside the chunk.",
        anchor="residual-correlations",
    ),
)


def by_key() -> dict[tuple[str, str], Metric]:
    """``{(name, split): Metric}`` of :data:`METRICS`, read at call time (a test may extend it)."""
    return {m.key: m for m in METRICS}


def by_curve() -> dict[str, Metric]:
    """``{curve attribute: Metric}`` of :data:`METRICS`, read at call time (a test may extend it)."""
    return {m.curve: m for m in METRICS}
