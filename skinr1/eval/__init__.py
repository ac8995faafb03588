"""Evaluation: per-level, per-skin-type diagnostic metrics of checkpoints on held-out manifests."""
