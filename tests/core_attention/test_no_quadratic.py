"""No O(Lq Lk) tensor on the CUDA flex path unless the caller's mask is one (issue 17, item 1).

The CUDA path's planning (terms' score_mods, the BlockMask, empty-row handling) is traced on
``meta`` tensors at L = 4096 with the CUDA selection faked; a dispatch mode records the largest
tensor any op returns. The block structure is checked against ``create_block_mask`` on CPU, and the
GPU variant measures ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch._dynamo._trace_wrapped_higher_order_op import TransformGetItemToIndex
from torch.nn.attention.flex_attention import create_block_mask
from torch.utils._python_dispatch import TorchDispatchMode

from zoo.core_attention import positions
from zoo.core_attention.attention import KernelFallbackWarning, attention, select_backend
from zoo.core_attention.positions.base import BoundPosition

attention_mod = importlib.import_module("zoo.core_attention.attention")  # the package re-exports attention()
B, H, D, L = 2, 8, 64, 4096


class LargestTensor(TorchDispatchMode):
    """Records the largest ``numel`` among the outputs of every op run under it (views included)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), func
        return out


def _term(name: str):
    if name == "t5":
        return positions.T5Bias(H, num_buckets=32, max_distance=128)
    if name == "alibi":
        return positions.ALiBi(H)
    if name == "relative":
        return positions.RelativeEmbedding(D, 64)
    if name == "table2d":
        return positions.RelativeBias2D((64, 64), H)
    raise KeyError(name)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Select as on CUDA and record what the flex call would be handed, instead of running it."""
    seen = {}

    def fake_flex(q, k, v, score_mod=None, block_mask=None, scale=None):
        seen.update(score_mod=score_mod, block_mask=block_mask)
        return torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)

    monkeypatch.setattr(attention_mod, "_on_cuda", lambda t: True)
    monkeypatch.setattr(attention_mod, "_flex_fn", lambda device: fake_flex)
    monkeypatch.setattr(attention_mod, "_WARNED_FALLBACKS", set())
    attention_mod._causal_block_mask.cache_clear()
    yield seen
    attention_mod._causal_block_mask.cache_clear()


@pytest.mark.parametrize("term_name", ["t5", "alibi", "relative", "table2d"])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "keypad", "keypad+causal"])
def test_flex_path_builds_no_lq_by_lk_tensor(fake_cuda, term_name, mask_kind):
    meta = torch.device("meta")
    q = torch.empty(B, H, L, D, device=meta)
    k, v = torch.empty(B, 2, L, D, device=meta), torch.empty(B, 2, L, D, device=meta)
    mask = torch.empty(B, 1, 1, L, dtype=torch.bool, device=meta) if "keypad" in mask_kind else None
    causal = "causal" in mask_kind
    term = _term(term_name).to(meta)
    # auto picks flex except where a kernel (relative) or feature columns (causal ALiBi) take the call
    picked = select_backend(q, k, v, [BoundPosition(term, {})], mask, causal, 0.0)
    assert picked == ("sdpa" if term_name == "alibi" and causal else "flex")
    backend = "auto" if picked == "flex" else "flex"
    with LargestTensor() as mode:
        attention(q, k, v, position=term, mask=mask, causal=causal, backend=backend)
        for fn in (fake_cuda["score_mod"], getattr(fake_cuda["block_mask"], "mask_mod", None)):
            if fn is not None:  # evaluate the mods as a kernel does: on scalar indices
                i = torch.zeros((), dtype=torch.int32, device=meta)
                args = (torch.zeros((), device=meta), i, i, i, i) if fn is fake_cuda["score_mod"] else (i, i, i, i)
                with TransformGetItemToIndex():  # tensor indices as flex traces them
                    fn(*args)
    assert mode.largest < L * L, f"{mode.op} built a tensor of {mode.largest} elements (Lq * Lk = {L * L})"
    assert (fake_cuda["block_mask"] is None) == (mask_kind == "none")


def test_causal_block_mask_is_built_once_per_shape(fake_cuda):
    q = torch.empty(1, H, 512, D, device="meta")
    for _ in range(3):
        attention(q, q, q, position=positions.T5Bias(H).to("meta"), causal=True)
    info = attention_mod._causal_block_mask.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize("lq,lk", [(300, 300), (129, 385), (256, 256), (40, 300)])
@pytest.mark.parametrize("kind", ["causal", "keypad", "keypad+causal", "dense", "dense+causal"])
def test_block_structure_equals_create_block_mask(lq, lk, kind):
    g = torch.Generator().manual_seed(lq + lk)
    causal = "causal" in kind
    if kind.startswith("keypad"):
        mask = torch.ones(2, 1, 1, lk, dtype=torch.bool)
        mask[0, ..., : lk // 3] = False  # left padding over whole tiles
        mask[1, ..., 5:140] = torch.rand(135, generator=g) > 0.5
    elif kind.startswith("dense"):
        mask = torch.rand(2, 1, lq, lk, generator=g) > 0.2
        mask[..., 140:, :130] = False  # a whole empty tile
    else:
        mask = None
    offset = lk - lq

    def mod(b, h, q_idx, kv_idx):
        keep = kv_idx <= q_idx + offset if causal else kv_idx >= 0
        return keep & mask[b, 0, q_idx if mask.shape[2] > 1 else 0, kv_idx] if mask is not None else keep

    want = create_block_mask(mod, 2, 1, lq, lk, device="cpu")
    if mask is None:
        got = attention_mod._causal_block_mask(lq, lk, torch.device("cpu"))
    else:
        got = attention_mod._flex_block_mask(mask, causal, lq, lk, torch.device("cpu"))
    shape = (2, 1) + want.to_dense().shape[2:]
    torch.testing.assert_close(got.to_dense().expand(shape), want.to_dense())
    # full tiles (no mask_mod) exactly as create_block_mask separates them
    full = lambda bm: torch.zeros(bm.full_kv_indices.shape, dtype=torch.int32).scatter_(  # noqa: E731
        -1, bm.full_kv_indices.long(), (torch.arange(bm.full_kv_indices.shape[-1]) < bm.full_kv_num_blocks[..., None]).int()
    )
    torch.testing.assert_close(full(got).expand(full(want).shape), full(want))


def test_decoding_step_goes_to_sdpa_and_training_to_flex(fake_cuda):
    t5 = BoundPosition(positions.T5Bias(H), {})
    q1, qL, kv = torch.empty(B, H, 1, D), torch.empty(B, H, 512, D), torch.empty(B, H, 512, D)
    assert select_backend(q1, kv, kv, [t5], None, True, 0.0) == "sdpa"
    assert select_backend(qL, kv, kv, [t5], None, True, 0.0) == "flex"


def test_auto_warns_once_per_term_and_reason_when_it_falls_back(fake_cuda):
    q = torch.randn(1, H, 8, D)
    rel = positions.RelativeEmbedding(D, 4)
    bound = rel.bind(q_pos=torch.arange(8))  # bound positions: the kernel needs default ones
    with pytest.warns(KernelFallbackWarning, match=r"'relative_attention' cannot run it: .*default \(contiguous\) positions.*flex"):
        assert select_backend(q, q, q, [bound], None, False, 0.0) == "flex"
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelFallbackWarning)
        select_backend(q, q, q, [bound], None, False, 0.0)  # the same reason: no second warning
    with pytest.warns(KernelFallbackWarning, match="FlexAttention has no dropout"):
        assert select_backend(q, q, q, [BoundPosition(positions.T5Bias(H), {})], None, False, 0.1) == "sdpa"


def test_t5_score_mod_equals_bias_for_long_and_bound_distances():
    t5 = positions.T5Bias(2, num_buckets=8, max_distance=20, bidirectional=True).double()
    q = torch.randn(1, 2, 30, 4, dtype=torch.float64)
    k = torch.randn(1, 2, 70, 4, dtype=torch.float64)
    for bound in (t5, t5.bind(q_pos=torch.arange(30) * 3, k_pos=torch.arange(70) - 9)):
        with torch.no_grad():
            ref = attention(q, k, k, position=bound, backend="reference")
            torch.testing.assert_close(attention(q, k, k, position=bound, backend="flex"), ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("term_name", ["t5", "alibi"])
def test_flex_peak_memory_on_cuda_is_linear(term_name):
    """Forward + backward with key padding and causality at L 4096: the peak over the inputs stays
    far below one (B, H, L, L) fp16 tensor (2 GiB at these sizes would be 512 MiB)."""
    dev = torch.device("cuda")
    q, k, v = (torch.randn(B, H, L, D, device=dev, dtype=torch.float16, requires_grad=True) for _ in range(3))
    mask = torch.ones(B, 1, 1, L, dtype=torch.bool, device=dev)
    mask[0, ..., :1000] = False
    term = _term(term_name).to(dev)
    attention(q, k, v, position=term, mask=mask, causal=True).sum().backward()  # compile outside the measure
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    attention(q, k, v, position=term, mask=mask, causal=True).sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < B * H * L * L * 2 // 8, f"{extra / 2**20:.0f} MiB extra"
