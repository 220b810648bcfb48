"""Time and memory of MatchAttention: the reference gather, the chunked path and the fused Triton kernel.

    python benchmarks/match_attention.py            # CUDA: MatchStereo-like sizes, benchmarks/results/match_attention_cuda.md
    OMP_NUM_THREADS=1 python benchmarks/match_attention.py   # CPU: the demo's shapes, benchmarks/results/match_attention_cpu.md
    python benchmarks/match_attention.py --smoke    # CPU: tiny sizes, the kernel through TRITON_INTERPRET=1 (correctness only)
    python benchmarks/match_attention.py --compile-check   # no GPU needed: compile both kernels for sm_90

A cell is a feature map (Hq x Wq = Hk x Wk), a radius r, a batch B (views x pairs), H heads and a head
dim D = Dv. CUDA: the decoder-stage maps of MatchStereo at B = 1, H = 4, D = 32 in bfloat16. CPU: the
``matchstereo_demo`` decoder's four scales exactly as one training step calls them (B = 4: two views
of a batch of 2; H = 4; D = 48/4 ... 16/4 at 1/32 ... 1/4 of a 128 x 128 crop; r = 1), one larger map, and
the kernel at one tiny map under the interpreter; float32. For each it records the forward time, the
forward+backward time (gradients w.r.t. q, k, v and the centres, weights returned as the
cross-attention uses them) and the peak memory of one forward+backward above the inputs (CUDA: the
allocator's peak; CPU: the peak of live tensors in torch.profiler's memory timeline), plus the largest
difference of the output from the reference's. Times are the best of ``--iters`` runs; on CPU they are the
process's CPU time (run it with ``OMP_NUM_THREADS=1``: then CPU time is wall time on an idle machine), since
the CPU machines here are shared. Under the interpreter the kernel's times measure
Python, not a kernel.
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

HEADERS = ["map", "r", "B x H x D", "method", "dtype", "fwd ms", "fwd+bwd ms", "peak MiB", "max |out - ref|"]
# the matchstereo_demo decoder at a 128 x 128 crop, batch 2 (both views: B = 4): map, head dim, radius
DEMO_CELLS = [("4x4", 12, 1), ("8x8", 8, 1), ("16x16", 6, 1), ("32x32", 4, 1)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", nargs="+", default=None, help="HxW feature maps (CUDA default 48x64 96x128 192x256 384x512)")
    p.add_argument("--radii", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny sizes: checks the code path")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--compile-check", action="store_true",
                   help="compile the forward and backward kernels ahead of time for sm_90 in fp32, bf16 and fp64 "
                        "(run without TRITON_INTERPRET; catches code the interpreter accepts but the compiler rejects)")
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 1 if args.smoke else 10
    return args


def cells(args, device):
    """(map, radius, (B, H, D), backends) for this run."""
    every = ("reference", "chunked", "triton")
    if args.smoke:
        return [(m, r, (1, 2, 8), every) for m in args.maps or ["6x8"] for r in args.radii]
    if device == "cuda":
        maps = args.maps or ["48x64", "96x128", "192x256", "384x512"]
        return [(m, r, (1, 4, 32), every) for m in maps for r in args.radii]
    fast = ("reference", "chunked")
    if args.maps:
        return [(m, r, (1, 4, 32), fast) for m in args.maps for r in args.radii]
    return [(m, r, (4, 4, d), fast) for m, d, r in DEMO_CELLS] + \
        [("48x64", r, (1, 4, 32), fast) for r in args.radii] + [("6x8", 1, (1, 2, 8), every)]


def _inputs(rows, cols, shape, dtype, device):
    b, h, d = shape
    q, k, v = (torch.randn(b, h, rows, cols, d, device=device, dtype=dtype) for _ in range(3))
    own = torch.stack(torch.meshgrid(torch.arange(cols), torch.arange(rows), indexing="xy"), -1).to(device)
    centers = own + 3 * torch.randn(b, h, rows, cols, 2, device=device)  # (B, H, rows, cols, 2) own pixel + offset
    return q, k, v, centers.float()


def _best_ms(fn, iters, device):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    # CPU: this process's CPU time (page faults included), which other jobs on a shared machine do not inflate
    clock = time.perf_counter if device == "cuda" else time.process_time
    fn()
    sync()
    best = float("inf")
    for _ in range(iters):
        start = clock()
        fn()
        sync()
        best = min(best, clock() - start)
    return best * 1e3


def _cpu_peak_mib(fn) -> float:
    """Peak of live CPU tensor bytes during ``fn`` (created inside it), from torch.profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return peak / 2**20


def run_cell(backend, rows, cols, radius, shape, dtype, device, iters, ref_out):
    q, k, v, centers = _inputs(rows, cols, shape, dtype, device)
    leaves = [t.requires_grad_() for t in (q, k, v, centers)]

    def fwd():
        with torch.no_grad():
            return match_attention(*leaves, radius, backend=backend, return_weights=True)

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        out, weights = match_attention(*leaves, radius, backend=backend, return_weights=True)
        (out.float().sum() + weights.float().square().sum()).backward()

    interpreted = backend == "triton" and device == "cpu"
    iters = 1 if interpreted else iters
    fwd_ms = _best_ms(fwd, iters, device)
    bwd_ms = _best_ms(fwd_bwd, iters, device)
    if device == "cuda":
        for t in leaves:
            t.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.1f}"
    else:
        try:
            peak = f"{_cpu_peak_mib(fwd_bwd):.1f}" if not interpreted else "n/a (interpreter)"
        except Exception as err:  # the memory timeline is a private profiler API
            peak = f"n/a ({type(err).__name__})"
    out = fwd()[0].float()
    diff = 0.0 if ref_out is None else (out - ref_out).abs().max().item()
    b, h, d = shape
    return out, [f"{rows}x{cols}", radius, f"{b} x {h} x {d}", backend + (" (interpreter)" if interpreted else ""),
                 str(dtype).replace("torch.", ""), f"{fwd_ms:.2f}", f"{bwd_ms:.2f}", peak, f"{diff:.2e}"]


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
    for spec, radius, shape, backends in cells(args, device):
        rows, cols = (int(x) for x in spec.split("x"))
        ref_out = None
        for backend in backends:
            torch.manual_seed(0)
            try:
                out, row = run_cell(backend, rows, cols, radius, shape, dtype, device, args.iters, ref_out)
                ref_out = out if backend == "reference" else ref_out
            except torch.cuda.OutOfMemoryError:
                row = [spec, radius, " x ".join(map(str, shape)), backend, str(dtype), "OOM", "OOM", "OOM", ""]
                torch.cuda.empty_cache()
            rows_out.append(row)
            print(markdown_table(HEADERS, [row]).splitlines()[-1], flush=True)
    notes = ("CPU: times are the best of the runs, in CPU time of this process (one thread); `chunked` (the default off CUDA) keeps 4 log-sum-exps per "
             "query for the backward and recomputes the window gathers in query chunks; the reference gathers "
             "(B, H, N, (2r+2)^2, D) keys and values and leaves the backward to autograd. The kernel rows run in "
             "Triton's interpreter (numpy): not kernel times, only a check that the fused path runs and agrees.") \
        if device == "cpu" else \
        ("peak MiB: one forward+backward above the inputs. The reference gathers (B, H, N, (2r+2)^2, D) "
         "keys and values; the kernel keeps 4 log-sum-exps per query.")
    env = environment()
    text = "# MatchAttention: reference gather vs chunked PyTorch vs fused Triton kernel\n\n" + \
        "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n\n" + markdown_table(HEADERS, rows_out) + f"\n\n{notes}\n"
    print(text)
    path = args.out or RESULTS / f"match_attention_{'cpu' if device == 'cpu' else 'cuda'}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
