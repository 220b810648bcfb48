"""Time and memory of MatchAttention: the reference gather against the fused Triton kernel.

    python benchmarks/match_attention.py            # CUDA: MatchStereo-like sizes, benchmarks/results/match_attention_cuda.md
    python benchmarks/match_attention.py --smoke    # CPU: tiny sizes through TRITON_INTERPRET=1 (correctness only)
    python benchmarks/match_attention.py --compile-check   # no GPU needed: compile both kernels for sm_90

For each feature map (Hq x Wq = Hk x Wk, the sizes of a decoder stage), radius r, B = 1, H = 4 heads,
D = Dv = 32 (smoke: H = 2, D = 8; float32 on CPU, bfloat16 on CUDA) it records the forward time, the forward+backward
time (gradients w.r.t. q, k, v and the centres, weights returned as the cross-attention uses them) and
the peak memory of one forward+backward above the inputs, plus the largest difference of the kernel's
output from the reference's. Under the interpreter the kernel's times measure Python, not a kernel:
the CPU table is a check that the code path runs and agrees, nothing more.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available() and "--compile-check" not in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RESULTS, environment, markdown_table  # noqa: E402
from zoo.core_attention import match_attention  # noqa: E402

HEADERS = ["map", "r", "method", "dtype", "fwd ms", "fwd+bwd ms", "peak MiB", "max |out - ref|"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", nargs="+", default=None, help="HxW feature maps (default 48x64 96x128 192x256 384x512)")
    p.add_argument("--radii", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny sizes: checks the code path")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compile-check", action="store_true",
                   help="compile the forward and backward kernels ahead of time for sm_90 in fp32, bf16 and fp64 "
                        "(run without TRITON_INTERPRET; catches code the interpreter accepts but the compiler rejects)")
    args = p.parse_args(argv)
    if args.maps is None:
        args.maps = ["6x8"] if args.smoke else ["48x64", "96x128", "192x256", "384x512"]
    if args.iters is None:
        args.iters = 1 if args.smoke else 20
    return args


def _inputs(rows, cols, radius, dtype, device):
    b, h, d = (1, 2, 8) if device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1" else (1, 4, 32)
    q, k, v = (torch.randn(b, h, rows, cols, d, device=device, dtype=dtype) for _ in range(3))
    own = torch.stack(torch.meshgrid(torch.arange(cols), torch.arange(rows), indexing="xy"), -1).to(device)
    centers = own + 3 * torch.randn(b, h, rows, cols, 2, device=device)  # (B, H, rows, cols, 2) own pixel + offset
    return q, k, v, centers.float()


def _measure(fn, iters, device):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters * 1e3


def run_cell(backend, rows, cols, radius, dtype, device, iters, ref_out):
    q, k, v, centers = _inputs(rows, cols, radius, dtype, device)
    leaves = [t.requires_grad_() for t in (q, k, v, centers)]

    def fwd():
        with torch.no_grad():
            return match_attention(*leaves, radius, backend=backend, return_weights=True)

    def fwd_bwd():
        out, weights = match_attention(*leaves, radius, backend=backend, return_weights=True)
        (out.float().sum() + weights.float().square().sum()).backward()

    fwd_ms = _measure(fwd, iters, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    bwd_ms = _measure(fwd_bwd, iters, device)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
    out = fwd()[0].float()
    diff = 0.0 if ref_out is None else (out - ref_out).abs().max().item()
    return out, [f"{rows}x{cols}", radius, backend, str(dtype).replace("torch.", ""), f"{fwd_ms:.2f}",
                 f"{bwd_ms:.2f}", "n/a (CPU)" if device != "cuda" else f"{peak:.1f}", f"{diff:.2e}"]


def compile_check() -> int:
    """Compile both kernels for an H100 / H200 (sm_90) with Triton's bundled toolchain; print one row each."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from zoo.core_attention.kernels.match_attention import triton as mk

    acc_buffers = {"CEN", "LSE", "DQ", "DK", "DVAL", "DCEN"}  # float32 (float64 for fp64 inputs)
    for dtype, acc in (("fp32", "fp32"), ("bf16", "fp32"), ("fp64", "fp64")):
        for fn, flag in ((mk._match_attention_fwd_kernel, "RETURN_W"), (mk._match_attention_bwd_kernel, "HAS_DW")):
            const = dict(R=2, D=32, DV=32, BLOCK_D=32, BLOCK_DV=32, BLOCK=mk.GPU_BLOCK, ACC_FP64=dtype == "fp64")
            const[flag] = True
            sig = {}
            for name in fn.arg_names:
                if name in const:
                    sig[name] = "constexpr"
                elif name.isupper():  # tensors
                    sig[name] = "*" + (acc if name in acc_buffers else dtype)
                else:
                    sig[name] = "fp32" if name == "scale" else "i32"
            compiled = triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32),
                                      options=dict(num_warps=4))
            print(f"| {fn.__name__} | {dtype} | compiled, {len(compiled.asm['cubin'])} B cubin |")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_check:
        return compile_check()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows_out = []
    for spec in args.maps:
        rows, cols = (int(x) for x in spec.split("x"))
        for radius in args.radii:
            torch.manual_seed(0)
            ref_out = None
            for backend in ("reference", "triton"):
                torch.manual_seed(0)
                try:
                    out, row = run_cell(backend, rows, cols, radius, dtype, device, args.iters, ref_out)
                    ref_out = out if backend == "reference" else ref_out
                except torch.cuda.OutOfMemoryError:
                    row = [spec, radius, backend, str(dtype), "OOM", "OOM", "OOM", ""]
                    torch.cuda.empty_cache()
                rows_out.append(row)
    notes = ("CPU: the kernel runs in Triton's interpreter (numpy); its times are not kernel times and only "
             "show that the fused path runs and agrees with the reference.") if device == "cpu" else \
        ("peak MiB: one forward+backward above the inputs. The reference gathers (B, H, N, (2r+2)^2, D) "
         "keys and values; the kernel keeps 4 log-sum-exps per query.")
    env = environment()
    text = "# MatchAttention: reference gather vs fused Triton kernel\n\n" + \
        "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n\n" + markdown_table(HEADERS, rows_out) + f"\n\n{notes}\n"
    print(text)
    path = args.out or RESULTS / f"match_attention_{'cpu' if device == 'cpu' else 'cuda'}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
