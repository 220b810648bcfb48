"""Float64 outputs equal to the official code's, when a checkout of impiga/Plain-DETR is given.

``ZOO_PLAIN_DETR_OFFICIAL=/path/to/Plain-DETR pytest -m slow tests/vision/detection/test_official_parity.py``
runs ``benchmarks/plain_detr_parity.py``'s comparison (the official model built from its released config
in a float64 copy, converted through ``convert_official``) on the smallest eval input; without the
variable it skips: no official code ships with the zoo. The full table (training mode with 1800
queries, the APE and reparam configs) is the benchmark's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

OFFICIAL = os.environ.get("ZOO_PLAIN_DETR_OFFICIAL")
BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "plain_detr_parity.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not OFFICIAL, reason="set ZOO_PLAIN_DETR_OFFICIAL to a checkout of impiga/Plain-DETR"),
]


def _bench():
    spec = importlib.util.spec_from_file_location("plain_detr_parity", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("plain_detr_parity", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def official_root(tmp_path):
    """The float64 copy; its top-level modules (``models``, ``util``, ``main``...) leave with the test."""
    path, before = list(sys.path), set(sys.modules)
    yield _bench().float64_copy(Path(OFFICIAL), tmp_path)
    sys.path[:] = path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or ""):
            del sys.modules[name]


@pytest.mark.parametrize("config", ["boxrpe", "reparam"])
def test_eval_outputs_equal_the_official_in_float64(official_root, config):
    import zoo
    from zoo.hub.checkpoints import load_state_dict_strict, strict_filter
    from zoo.vision.detection.models import convert_official

    bench = _bench()
    official = bench.build_official(official_root, config)
    script, name, overrides = bench.CONFIGS[config]
    ours = zoo.create_model(name, drop_path_rate=0.0, **overrides).double()
    load_state_dict_strict(ours, strict_filter(convert_official(official.state_dict(), ours), ours, source=script), source=script)
    mode, size, valid = bench.CASES[0]
    row = bench.compare(official, ours, mode, size, valid, seed=0)
    diffs = [float(v) for v in row[-6:-1] if v != "n/a"]  # logits, boxes, (deltas), aux layers, enc_outputs
    assert row[:3] == ["eval", "97x97", 300]
    assert max(diffs) < 1e-10 * (1e3 if ours.config.reparam else 1), row  # reparam boxes are pixels
    assert torch.get_default_dtype() == torch.float32
