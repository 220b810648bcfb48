"""Fixtures shared by the whole suite."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same RNG state, so random inputs and inits are reproducible."""
    random.seed(0)
    torch.manual_seed(0)
    return 0
