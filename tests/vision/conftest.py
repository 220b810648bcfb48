"""Vision tests run single-threaded: tiny convolutions on a shared 2-core machine are many times
faster without intra-op threads fighting over the cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
