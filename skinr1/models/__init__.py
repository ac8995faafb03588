"""Policy models: load from a local path or hub id; build the tiny test model."""

from skinr1.models.loading import load_policy, load_processor, resolve_model_source
from skinr1.models.tiny import TinyModelSpec, build_tiny_model

__all__ = ["TinyModelSpec", "build_tiny_model", "load_policy", "load_processor", "resolve_model_source"]
