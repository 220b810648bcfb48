"""Time and peak memory of RelativeEmbedding's reference (Huang et al.'s skewing) vs naive Shaw.

Naive Shaw materializes the ``(L, L, D)`` tensor of relative embeddings and contracts it with q;
the skewing reference computes ``q @ E_rel^T`` (``(L, 2L-1)`` per head) and reshapes it, so its
intermediate is O(L^2) instead of O(L^2 D). Each cell runs in a fresh process so that the peak
resident memory (``ru_maxrss``) above that process's baseline is the cell's own.

    python benchmarks/attention_reference.py            # L = 512, 1024, 2048; forward+backward
    python benchmarks/attention_reference.py --lengths 256 512 --repeats 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from zoo.core_attention import attention, positions  # noqa: E402


def naive_shaw(q, k, v, term, causal):
    """Shaw et al.'s formulation: gather E for every (i, j) pair, then contract over D."""
    lq, lk = q.shape[-2], k.shape[-2]
    i = torch.arange(lq)[:, None] + (lk - lq)
    j = torch.arange(lk)[None, :]
    idx = (j - i).clamp(-term.max_distance, term.max_positive) + term.max_distance  # (Lq, Lk)
    e_rel = term.weight[idx]  # (Lq, Lk, D): the tensor skewing avoids
    scale = q.shape[-1] ** -0.5
    logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, e_rel)) * scale
    if causal:
        logits = logits.masked_fill(j > i, float("-inf"))
    return torch.softmax(logits, -1) @ v


def _cell(method: str, length: int, causal: bool, repeats: int, queue) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    b, h, d, kmax = 1, 8, 64, length  # K = L: every distance has its own embedding, as in the paper
    term = positions.RelativeEmbedding(d, kmax)
    q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = (
        (lambda: naive_shaw(q, k, v, term, causal))
        if method == "naive Shaw (L, L, D)"
        else (lambda: attention(q, k, v, position=term, causal=causal, backend="reference"))
    )
    fwd, both = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        t1 = time.perf_counter()
        out.sum().backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        both.append(t2 - t0)
        q.grad = k.grad = v.grad = term.weight.grad = None
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # ru_maxrss is KiB on Linux
    queue.put((min(fwd), min(both), peak_mib))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="attention_reference_cpu")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for length in args.lengths:
        for causal in (False, True):
            for method in ("naive Shaw (L, L, D)", "skewing reference"):
                queue = ctx.Queue()
                p = ctx.Process(target=_cell, args=(method, length, causal, args.repeats, queue))
                p.start()
                p.join()
                if p.exitcode != 0:
                    rows.append([length, "causal" if causal else "bidir", method, "failed", "failed", "failed"])
                    continue
                fwd, both, peak = queue.get()
                rows.append([length, "causal" if causal else "bidir", method, f"{fwd * 1e3:.1f}", f"{both * 1e3:.1f}", f"{peak:.0f}"])
                print(rows[-1], flush=True)
    write_result(
        args.name,
        "RelativeEmbedding reference: skewing vs naive Shaw (B=1, H=8, D=64, K=L, float32, CPU)",
        ["L", "mask", "method", "forward ms", "fwd+bwd ms", "peak RSS MiB above baseline"],
        rows,
        notes="Best of the repeats. Peak memory is the process's resident-set high-water mark above its "
        "baseline after allocating the inputs, so it includes the backward pass.\n"
        "Command: `python benchmarks/attention_reference.py`",
    )


if __name__ == "__main__":
    main()
