"""Experiments built from the layers below: one run of a sweep (:mod:`.runs`), where runs execute
(:mod:`.executors`: local workers or SLURM), width sweeps (:mod:`.sweep`), clones across widths
(:mod:`.clones`), redundancy during training (:mod:`.dynamics`) and comparisons of sweeps
(:mod:`.compare`)."""
