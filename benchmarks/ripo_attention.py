"""RIPO attention: the materialized pitch/onset terms vs the exact fast form (extra q/k columns).

The materialized form (``backend="reference"``, as the official code) builds ``W FMS(p_i - p_j)``
as ``(B, L, L, d)`` tensors for pitch and for onset; the fast form (``backend="sdpa"``) turns both
terms into ``2 (d + 2)`` extra q/k feature columns by the sin/cos addition identities, so plain
SDPA / FlashAttention runs it with O(L) memory. Both are exact (see
``tests/core_attention/test_music_relative.py``).

Shapes follow the official RIPO config: d_model 256, 8 heads (head dim 32), FMS dim 256, causal,
float32, forward + backward. Each CPU cell runs in a fresh process and reports its resident-set
high-water mark above its baseline. A materialized cell whose estimated footprint exceeds
``--budget-gib`` is *not run* (it would swap or be killed); the table shows the estimate instead.
On CUDA the cells run in-process with ``torch.cuda.max_memory_allocated`` and out-of-memory is
caught and reported as measured.

    python benchmarks/ripo_attention.py                      # CPU: L = 256, 512, 1024, 4096
    python benchmarks/ripo_attention.py --device cuda        # GPU table (ripo_attention_cuda.md)
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

from zoo.core_attention import attention  # noqa: E402
from zoo.core_attention.positions.music import MusicRelative  # noqa: E402

B, H, D, E = 1, 8, 32, 256
METHODS = {"materialized (reference)": "reference", "fast q/k features (sdpa)": "sdpa"}


def materialized_bytes(length: int, batch: int = B, fme_dim: int = E, heads_dim: int = H * D) -> int:
    """Float32 bytes of the (B, L, L, .) tensors the materialized form keeps for backward.

    Per attribute: the FMS (``fme_dim``), the projected relative values (``H*D``) and their
    non-quantifiable selection (``H*D``, pitch only) -- counted for both attributes, a lower bound
    on the peak (temporaries and the (B, H, L, L) logits come on top).
    """
    per_pair = 2 * (fme_dim + heads_dim) + heads_dim
    return 4 * batch * length * length * per_pair


def _inputs(length: int, device: str):
    torch.manual_seed(0)
    term = MusicRelative(D, H, E).to(device)
    pitch = torch.randint(55, 90, (B, length), device=device)
    pitch[:, ::7] = 1  # rests: exercise the non-quantifiable embedding
    dur = torch.randint(1, 9, (B, length), device=device).float() / 4
    onset = torch.cumsum(dur, -1) - dur
    bound = term.bind(pitch=pitch.float(), onset=onset, nonquant=pitch <= 2)
    qkv = [torch.randn(B, H, length, D, device=device, requires_grad=True) for _ in range(3)]
    return term, bound, qkv


def _run(backend: str, length: int, repeats: int, device: str) -> tuple[float, float]:
    term, bound, qkv = _inputs(length, device)
    fwd, both = [], []
    for _ in range(repeats):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = attention(*qkv, position=bound, causal=True, backend=backend)
        sync()
        t1 = time.perf_counter()
        out.square().sum().backward()
        sync()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        both.append(t2 - t0)
        for t in (*qkv, *term.parameters()):
            t.grad = None
        del out
    return min(fwd), min(both)


def _cpu_cell(backend: str, length: int, repeats: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fwd, both = _run(backend, length, repeats, "cpu")
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    queue.put((fwd, both, peak_mib))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per cell (the machine is shared)")
    parser.add_argument("--budget-gib", type=float, default=4.0, help="skip materialized CPU cells estimated above this")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    rows = []
    ctx = mp.get_context("spawn")
    for length in args.lengths:
        est = materialized_bytes(length) / 2**30
        for method, backend in METHODS.items():
            cells = [length, method, f"{est:.2f}" if backend == "reference" else "-"]
            if args.device == "cpu":
                if backend == "reference" and est > args.budget_gib:
                    rows.append([*cells, "not run", "not run", f"> {args.budget_gib:g} GiB budget (est. {est:.1f} GiB)"])
                    print(rows[-1], flush=True)
                    continue
                queue = ctx.Queue()
                p = ctx.Process(target=_cpu_cell, args=(backend, length, args.repeats, args.threads, queue))
                p.start()
                p.join()
                if p.exitcode != 0:
                    rows.append([*cells, "failed", "failed", f"exit code {p.exitcode}"])
                    continue
                fwd, both, peak = queue.get()
            else:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                try:
                    fwd, both = _run(backend, length, args.repeats, "cuda")
                except torch.OutOfMemoryError:
                    rows.append([*cells, "OOM", "OOM", "out of memory (measured)"])
                    torch.cuda.empty_cache()
                    print(rows[-1], flush=True)
                    continue
                peak = torch.cuda.max_memory_allocated() / 2**20
            rows.append([*cells, f"{fwd * 1e3:.1f}", f"{both * 1e3:.1f}", f"{peak:.0f}"])
            print(rows[-1], flush=True)
    mem = "peak RSS MiB above baseline" if args.device == "cpu" else "peak CUDA MiB allocated"
    write_result(
        f"ripo_attention_{args.device}",
        f"RIPO pitch+onset attention: materialized vs fast form (B={B}, H={H}, D={D}, FMS dim {E}, causal, "
        f"float32, {args.device}, {args.threads if args.device == 'cpu' else 'all'} threads)",
        ["L", "method", "est. materialized GiB", "forward ms", "fwd+bwd ms", mem],
        rows,
        notes="Best of the repeats. 'est. materialized GiB' is a lower bound on what the materialized form keeps "
        "for backward: the (B, L, L, d) FMS and relative-value tensors of both attributes "
        "(`materialized_bytes` in the script). Cells marked 'not run' were skipped because that estimate "
        "exceeds the memory budget; they were not attempted. The fast form's memory grows linearly in L "
        "(q/k/v widened by 2 (d + 2) columns).\n"
        f"Command: `python benchmarks/ripo_attention.py{' --device cuda' if args.device == 'cuda' else ''}`",
    )


if __name__ == "__main__":
    main()
