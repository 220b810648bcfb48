"""RIPO and its baselines; importing this package registers them with :mod:`zoo.hub`."""

from .ripo import CONFIGS, RIPOConfig, RIPOTransformer

__all__ = ["CONFIGS", "RIPOConfig", "RIPOTransformer"]
