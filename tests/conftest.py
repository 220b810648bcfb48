"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import random

import pytest
import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU. Triton reads the
# variable when a kernel module is imported, so it is set before any test module imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same RNG state, so random inputs and inits are reproducible."""
    random.seed(0)
    torch.manual_seed(0)
    return 0
