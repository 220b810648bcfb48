"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import random
from pathlib import Path

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


TESTS = Path(__file__).resolve().parent
#: suites of small convolution / transformer models: on a shared 2-core machine they run many times
#: faster without intra-op threads fighting over the cores
SINGLE_THREAD_SUITES = ("vision", "sign", "speech")


@pytest.fixture(autouse=True)
def single_thread(request):
    path = Path(str(request.node.path)).resolve()
    if not (path.is_relative_to(TESTS) and path.relative_to(TESTS).parts[0] in SINGLE_THREAD_SUITES):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
