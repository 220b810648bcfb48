"""FlexAttention forms of every bias term vs no bias: forward and forward + backward on CUDA.

    python benchmarks/flex_terms.py              # CUDA: writes benchmarks/results/flex_terms_<device>.md
    python benchmarks/flex_terms.py --smoke      # any device: tiny flex-vs-reference check, no table

Each row runs ``attention(..., backend="flex")`` -- the zoo's real flex path (its BlockMask and
score_mods) -- causal with key padding, bf16, B x L = ``--tokens``, H 8, D 64. TFLOP/s counts the
q k^T and p v matmuls of the causal half (4 B H L^2 D / 2 forward, 2.5x that for the backward).
Without CUDA it refuses the timing run (FlexAttention has no CPU backward and eager CPU flex
materializes the scores) and runs only the smoke check.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from zoo.core_attention import attention, positions  # noqa: E402

H, D = 8, 64


def make_term(name: str, length: int):
    side = int(length**0.5)
    return {
        "none": None,
        "alibi": positions.ALiBi(H),
        "t5": positions.T5Bias(H),
        "relative (q E^T precomputed)": positions.RelativeEmbedding(D, 512),
        "relative_bias_2d": positions.RelativeBias2D((side, side), H),
        "dynamic_position_bias": positions.DynamicPositionBias(H, 32, group_size=side),
    }[name]


TERMS = ("none", "alibi", "t5", "relative (q E^T precomputed)", "relative_bias_2d", "dynamic_position_bias")


def smoke() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, H, 64, D, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 1, 1, 64, dtype=torch.bool)
    mask[0, ..., :10] = False
    for name in TERMS:
        term = make_term(name, 64)
        term = term.double() if term is not None else None
        with torch.no_grad():
            ref = attention(q, k, v, position=term, mask=mask, causal=True, backend="reference")
            out = attention(q, k, v, position=term, mask=mask, causal=True, backend="flex")
        err = (out - ref).abs().max().item()
        print(f"{name:32s} max |flex - reference| = {err:.2e}")
        assert err < 1e-9, name


def bench(fn, iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=200, help="skip the remaining rows after this long")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke or not torch.cuda.is_available():
        if not args.smoke:
            print("flex_terms: no CUDA device; timing needs one (FlexAttention has no CPU backward). Smoke check only.")
        smoke()
        return
    dev, t0, rows, skipped = torch.device("cuda"), time.perf_counter(), [], []
    for length in args.lengths:
        b = max(1, args.tokens // length)
        base = {}
        for name in TERMS:
            if time.perf_counter() - t0 > args.budget_s:
                skipped.append(f"{name} L={length}")
                continue
            term = make_term(name, length)
            term = term.to(dev) if term is not None else None
            q, k, v = (torch.randn(b, H, length, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            mask = torch.ones(b, 1, 1, length, dtype=torch.bool, device=dev)
            mask[0, ..., : length // 8] = False

            def fwd(q=q, k=k, v=v, term=term, mask=mask):
                return attention(q, k, v, position=term, mask=mask, causal=True, backend="flex")

            def fwd_bwd(fwd=fwd):
                fwd().sum().backward()

            with torch.no_grad():
                t_f = bench(fwd, args.iters)
            torch.cuda.reset_peak_memory_stats()
            t_fb = bench(fwd_bwd, args.iters)
            peak = torch.cuda.max_memory_allocated() / 2**20
            flops = 4 * b * H * length * length * D / 2
            base.setdefault("f", t_f)
            base.setdefault("fb", t_fb)
            rows.append([
                length, b, name, f"{t_f * 1e3:.2f}", f"{flops / t_f / 1e12:.1f}", f"{t_f / base['f']:.2f}",
                f"{t_fb * 1e3:.2f}", f"{3.5 * flops / t_fb / 1e12:.1f}", f"{t_fb / base['fb']:.2f}", f"{peak:.0f}",
            ])
    device = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_")
    write_result(
        f"flex_terms_{device}", "FlexAttention forms of the bias terms vs no bias (causal + key padding, bf16)",
        ["L", "B", "term", "fwd ms", "fwd TFLOP/s", "fwd / none", "fwd+bwd ms", "fwd+bwd TFLOP/s", "fwd+bwd / none", "peak MiB"],
        rows, notes=("Skipped over the time budget: " + ", ".join(skipped)) if skipped else "",
    )


if __name__ == "__main__":
    main()
