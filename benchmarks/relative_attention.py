"""Speed and memory of the fused relative-attention kernel against its alternatives.

    python benchmarks/relative_attention.py            # CUDA: the full table, written to benchmarks/results/
    python benchmarks/relative_attention.py --smoke    # CPU: the same code through Triton's interpreter, tiny sizes
    python benchmarks/relative_attention.py --compile-report --default-configs \
        --out benchmarks/results/relative_attention_compile_sm90.md   # no GPU needed: hinted sm_90 resources

For each length L (default 1K .. 32K) at a fixed number of tokens per batch (B = tokens // L), D = 64,
bf16, causal and bidirectional, with a shared table of full range (K = L, as in the Music
Transformer), it times the forward and forward+backward passes and records the peak memory of:

  kernel     ``zoo.core_attention.kernels.relative_attention`` (this repository's Triton kernel)
  skew-ref   ``attention(..., backend="reference")``: Huang et al.'s skewing, (B, H, L, L) logits
  flex       FlexAttention (compiled) whose ``score_mod`` indexes ``q @ E^T`` precomputed as a
             (B, H, L, R) tensor and captured -- the only way q_i . E[j - i] can enter a score_mod
  sdpa       ``scaled_dot_product_attention`` on the FlashAttention backend with no position term:
             the speed ceiling

TFLOP/s count plain attention's FLOPs for every method (forward 4 B H L^2 D, halved when causal;
forward+backward 3.5x that), so they compare as inverse times. Peak memory is the peak allocated
during one forward+backward above what the inputs already hold. A cell that runs out of memory prints
OOM, and a method is not retried at larger L once it ran out of memory in that mode.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("kernel", "skew-ref", "flex", "sdpa")


@dataclass
class Cell:
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    peak_mib: float | None = None
    status: str = "ok"  # "ok" | "OOM" | "error: ..." | "skipped"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="default 1K .. 32K (smoke: 32 48)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per batch: B = tokens // L (default 32768)")
    p.add_argument("--heads", type=int, default=None, help="default 8 (smoke: 2)")
    p.add_argument("--dim", type=int, default=None, help="head dim D (default 64, smoke: 16)")
    p.add_argument("--max-distance", type=int, default=None, help="clipping distance K (default: L)")
    p.add_argument("--per-head", action="store_true", help="one table per head instead of a shared one")
    p.add_argument("--modes", nargs="+", default=["causal", "bidirectional"], choices=["causal", "bidirectional"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", type=Path, default=None, help="markdown output (default: benchmarks/results/"
                   "relative_attention_<device>.md on CUDA, none with --smoke)")
    p.add_argument("--compile-report", action="store_true",
                   help="compile every autotune config for sm_90 with a real launch's hints (no GPU needed) and "
                        "print registers, spills, shared memory, wgmma (HGMMA) counts and tile matmuls per band tile")
    p.add_argument("--default-configs", action="store_true",
                   help="with --compile-report: only the untuned default config of each kernel (quick)")
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="with --compile-report: head dims")
    p.add_argument("--dropout", nargs="+", default=["off", "on"], choices=["off", "on"],
                   help="with --compile-report: kernels without / with dropout")
    p.add_argument("--qe", nargs="+", default=["in-kernel", "precomputed"], choices=["in-kernel", "precomputed"],
                   help="with --compile-report: q.E^T computed in the kernel, or precomputed (K << L)")
    p.add_argument("--smoke", action="store_true",
                   help="run on CPU through TRITON_INTERPRET=1 at tiny sizes (checks the code path, not speed)")
    args = p.parse_args(argv)
    defaults = ([32, 48], 96, 2, 16) if args.smoke else ([1024, 2048, 4096, 8192, 16384, 32768], 32768, 8, 64)
    for name, value in zip(("lengths", "tokens", "heads", "dim"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# ----------------------------------------------------------------------------- methods
def make_method(name: str, q, k, v, weight, kmax: int, causal: bool, scale: float) -> Callable:
    """A function of (q, k, v, weight) -> output for one method; setup that a caller would cache
    (compiled functions, block masks) happens here, outside the timed region."""
    if name == "kernel":
        from zoo.core_attention.kernels.relative_attention.triton import relative_attention

        return lambda q, k, v, w: relative_attention(q, k, v, w, kmax, causal=causal, scale=scale)
    if name == "skew-ref":
        from zoo.core_attention import attention, positions

        term = positions.RelativeEmbedding(q.shape[-1], kmax, num_heads=weight.shape[0] if weight.dim() == 3 else None,
                                           causal=causal)
        term.weight = weight  # the benchmark's weight is an nn.Parameter: the term owns exactly that tensor

        def skew(q, k, v, w):
            return attention(q, k, v, position=term, causal=causal, scale=scale, backend="reference")

        return skew
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        lq, lk = q.shape[2], k.shape[2]
        khi = weight.shape[-2] - 1 - kmax
        flex = torch.compile(flex_attention, dynamic=False) if q.is_cuda else flex_attention
        block_mask = None
        if causal:
            block_mask = create_block_mask(lambda b, h, qi, kj: kj <= qi + (lk - lq), None, None, lq, lk,
                                           device=q.device)

        def flex_relative(q, k, v, w):
            table = w if w.dim() == 3 else w[None]  # (Ht, R, D)
            qe = (q @ table.transpose(-1, -2).to(q.dtype)) * scale  # (B, H, Lq, R): the captured tensor
            offset = lk - lq

            def score_mod(score, b, h, qi, kj):
                r = (kj - qi - offset).clamp(-kmax, khi) + kmax
                return score + qe[b, h, qi, r]

            return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)

        return flex_relative
    if name == "sdpa":
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(q, k, v, w):
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

        return sdpa
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")


# ----------------------------------------------------------------------------- measuring
def time_ms(fn: Callable[[], object], cuda: bool) -> float:
    if cuda:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    # CPU smoke run: the interpreter's times mean nothing, so one run checks the path and stays quick
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(fn: Callable, inputs: list[torch.Tensor], dout: torch.Tensor, cuda: bool) -> tuple[Cell, torch.Tensor]:
    def forward():
        with torch.no_grad():
            return fn(*inputs)

    def forward_backward():
        out = fn(*inputs)
        return torch.autograd.grad(out, inputs, dout, allow_unused=True)

    out = forward()
    cell = Cell(fwd_ms=time_ms(forward, cuda))
    try:  # a forward that fits still gets its numbers when the backward fails
        if cuda:
            forward_backward()  # warm-up: autotuning and compilation stay out of the peak
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            forward_backward()
            torch.cuda.synchronize()
            cell.peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        cell.fwd_bwd_ms = time_ms(forward_backward, cuda)
    except torch.OutOfMemoryError:
        cell.status = "OOM"
    except Exception as err:  # noqa: BLE001 -- e.g. FlexAttention has no CPU backward
        cell.status = error_text(err)
    return cell, out


def error_text(err: Exception) -> str:
    return f"error: {type(err).__name__}: {str(err).splitlines()[0][:70]}" if str(err) else type(err).__name__


def attention_flops(b: int, h: int, length: int, d: int, causal: bool) -> float:
    return 4.0 * b * h * length * length * d * (0.5 if causal else 1.0)


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, str]]:
    cuda = not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32  # the interpreter computes in numpy: float32
    rows: list[dict] = []
    for mode in args.modes:
        causal = mode == "causal"
        oom_at: set[str] = set()
        for length in args.lengths:
            b = max(1, args.tokens // length)
            kmax = args.max_distance or length
            n_rows = kmax + 1 if causal else 2 * kmax + 1
            scale = args.dim**-0.5
            gen = torch.Generator(device=device).manual_seed(length)
            shape = (b, args.heads, length, args.dim)
            q, k, v, dout = (torch.randn(shape, device=device, dtype=dtype, generator=gen) for _ in range(4))
            w_shape = (args.heads, n_rows, args.dim) if args.per_head else (n_rows, args.dim)
            weight = torch.randn(w_shape, device=device, dtype=dtype, generator=gen) * args.dim**-0.5
            weight = torch.nn.Parameter(weight)  # the skew reference's term owns it (see make_method)
            inputs = [t.requires_grad_() for t in (q, k, v, weight)]
            outputs: dict[str, torch.Tensor] = {}
            for name in args.methods:
                if name in oom_at:
                    cell = Cell(status="OOM")
                else:
                    try:
                        fn = make_method(name, q, k, v, weight, kmax, causal, scale)
                        cell, out = measure(fn, inputs, dout, cuda)
                        if name in ("kernel", "skew-ref"):
                            outputs[name] = out
                    except torch.OutOfMemoryError:
                        cell = Cell(status="OOM")
                    except Exception as err:  # noqa: BLE001 -- one failing cell must not end the table
                        cell = Cell(status=error_text(err))
                    finally:
                        if cuda:
                            torch.cuda.empty_cache()
                if cell.status == "OOM":
                    oom_at.add(name)
                flops = attention_flops(b, args.heads, length, args.dim, causal)
                rows.append(dict(mode=mode, L=length, B=b, K=kmax, method=name, cell=cell, flops=flops))
            if "kernel" in outputs and "skew-ref" in outputs:
                err = (outputs["kernel"].float() - outputs["skew-ref"].float()).abs().max().item()
                for r in rows[-len(args.methods):]:
                    r["max_err"] = err
            del q, k, v, dout, weight, inputs, outputs
    import triton

    info = {
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}), "
                  "Triton interpreter -- smoke run, times are not meaningful",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": str(torch.version.cuda),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
        "dtype": str(dtype).replace("torch.", ""),
    }
    return rows, info


# ----------------------------------------------------------------------------- reporting
def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(rows: list[dict], info: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        "# Relative attention: fused Triton kernel vs alternatives",
        "",
        f"- device: {info['device']}",
        f"- torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}",
        f"- date: {info['date']}",
        f"- command: `{info['command']}`",
        f"- {args.tokens} tokens per batch (B = tokens // L), H = {args.heads}, D = {args.dim}, {info['dtype']}, "
        f"{'per-head' if args.per_head else 'shared'} table, K = {args.max_distance or 'L'}",
        "- TFLOP/s use plain attention's FLOPs for every method; peak = extra memory of one fwd+bwd; "
        "`x sdpa` = fwd+bwd time over SDPA-flash's; `err` = max |kernel - skew-ref| of the forward output",
        "",
        "| mode | L | B | method | fwd ms | fwd+bwd ms | fwd TFLOP/s | fwd+bwd TFLOP/s | peak MiB | x sdpa | err |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sdpa_time = {(r["mode"], r["L"]): r["cell"].fwd_bwd_ms for r in rows if r["method"] == "sdpa"}
    for r in rows:
        c: Cell = r["cell"]
        if c.fwd_ms is None:
            lines.append(f"| {r['mode']} | {r['L']} | {r['B']} | {r['method']} | {c.status} | | | | | | |")
            continue
        ref = sdpa_time.get((r["mode"], r["L"]))
        ratio = c.fwd_bwd_ms / ref if ref and c.fwd_bwd_ms else None
        tf = r["flops"] / (c.fwd_ms * 1e-3) / 1e12
        tfb = 3.5 * r["flops"] / (c.fwd_bwd_ms * 1e-3) / 1e12 if c.fwd_bwd_ms else None
        err = r.get("max_err")
        bwd = fmt(c.fwd_bwd_ms) if c.status == "ok" else c.status
        lines.append(
            f"| {r['mode']} | {r['L']} | {r['B']} | {r['method']} | {fmt(c.fwd_ms)} | {bwd} | "
            f"{fmt(tf, '.1f')} | {fmt(tfb, '.1f')} | {fmt(c.peak_mib, '.0f')} | {fmt(ratio)} | "
            f"{fmt(err, '.1e') if err is not None else '-'} |"
        )
    lines += ["", "## Targets (issue 5, H100)", ""] + targets(rows)
    return "\n".join(lines) + "\n"


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, checked on the measured rows (where the needed cells exist)."""
    by = {(r["mode"], r["L"], r["method"]): r["cell"] for r in rows}
    out = []
    for mode in sorted({r["mode"] for r in rows}):
        kern, skew = by.get((mode, 4096, "kernel")), by.get((mode, 4096, "skew-ref"))
        if kern and skew and kern.status == "ok" and skew.status == "ok":
            out.append(f"- {mode}, L=4K: kernel fwd+bwd {skew.fwd_bwd_ms / kern.fwd_bwd_ms:.1f}x faster than "
                       "skew-ref (target >= 5x)")
        for length in sorted({r["L"] for r in rows if r["L"] >= 4096}):
            kern, sdpa = by.get((mode, length, "kernel")), by.get((mode, length, "sdpa"))
            if kern and sdpa and kern.status == "ok" and sdpa.status == "ok":
                mem = (f", peak memory {kern.peak_mib / sdpa.peak_mib:.2f}x (target <= 1.3x)"
                       if kern.peak_mib and sdpa.peak_mib else "")
                out.append(f"- {mode}, L={length}: kernel/sdpa fwd+bwd time {kern.fwd_bwd_ms / sdpa.fwd_bwd_ms:.2f}x "
                           f"(target <= 1.8x){mem}")
        kern, skew = by.get((mode, 32768, "kernel")), by.get((mode, 32768, "skew-ref"))
        if kern and skew:
            out.append(f"- {mode}, L=32K: kernel {kern.status}, skew-ref {skew.status} "
                       "(target: kernel runs where skew-ref is OOM)")
    return out or ["- (no cells at the target lengths in this run)"]


def count_tile_matmuls(precompute_qe: bool = False) -> dict[str, int]:
    """Tile matmuls per band tile of the forward and the backward, counted, not asserted.

    Runs the kernels under the Triton interpreter (``TRITON_INTERPRET=1`` must be set before Triton is
    imported) and counts ``tl.dot`` calls for ``T = 1, 2, 3`` query tiles of ``R T`` band tiles each
    (``R = BLOCK_M / BLOCK_N``; bidirectional, K = L: every tile is a band tile). A pass costs
    ``a R T^2 + b T + c`` calls (per-tile work, per-program setup, per-call setup), so the second
    difference ``2 a R`` gives ``a``, the count per (BLOCK_M, BLOCK_N) band tile.
    """
    from triton.runtime import interpreter

    from zoo.core_attention.kernels.relative_attention import triton as rk

    if not rk.INTERPRET:
        raise RuntimeError("count_tile_matmuls needs TRITON_INTERPRET=1 set before triton is imported")
    calls = {"n": 0}
    original = interpreter.InterpreterBuilder.create_dot

    def counting_dot(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    ratio = rk.INTERPRETER_BLOCK_M // rk.INTERPRETER_BLOCK_N
    counts: dict[str, list[int]] = {"forward": [], "backward": []}
    interpreter.InterpreterBuilder.create_dot = counting_dot
    try:
        for tiles in (1, 2, 3):
            length = tiles * rk.INTERPRETER_BLOCK_M
            gen = torch.Generator().manual_seed(tiles)
            q, k, v = (torch.randn(1, 1, length, 16, generator=gen).requires_grad_() for _ in range(3))
            weight = torch.randn(2 * length + 1, 16, generator=gen).requires_grad_()  # (R, D), K = L
            calls["n"] = 0
            out = rk.relative_attention(q, k, v, weight, length, causal=False, precompute_qe=precompute_qe)
            counts["forward"].append(calls["n"])
            calls["n"] = 0
            out.backward(torch.ones_like(out))
            counts["backward"].append(calls["n"])
    finally:
        interpreter.InterpreterBuilder.create_dot = original
    per_tile = {}
    for name, (c1, c2, c3) in counts.items():
        second = c3 - 2 * c2 + c1
        if second % (2 * ratio):
            raise RuntimeError(f"{name}: tl.dot counts {c1, c2, c3} are not quadratic in the number of tiles")
        per_tile[name] = second // (2 * ratio)
    return per_tile


def _tile_matmul_counts() -> dict[tuple[str, bool], int]:
    """count_tile_matmuls for both q.E^T paths, in an interpreter subprocess: ``(kernel, PRE_QE) -> n``."""
    import subprocess

    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import relative_attention as b; out = {}\n"
            "for pre in (False, True):\n"
            "    out[str(pre)] = b.count_tile_matmuls(pre)\n"
            "print(json.dumps(out))")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    import json

    found = json.loads(run.stdout.strip().splitlines()[-1])
    return {(kernel, pre == "True"): n for pre, by in found.items()
            for kernel, n in (("_fwd_kernel", by["forward"]), ("_bwd_kernel", by["backward"]))}


# pointer arguments of the kernels and their element types in the report (the rest: bf16 tensors)
_POINTERS = {"Q", "K", "V", "E", "QE", "KPM", "O", "LSE", "DO", "DELTA", "DQ", "DK", "DV", "DE", "DQE", "KEEP"}
_POINTER_TYPES = {"KPM": "*i8", "LSE": "*fp32", "DELTA": "*fp32", "DK": "*fp32", "DV": "*fp32", "DE": "*fp32",
                  "QE": "*fp32", "DQE": "*fp32"}
# integer arguments that a real launch passes as multiples of 16 (so Triton marks them tt.divisibility=16):
# the strides of (B, H, L, D) tensors with D >= 16, the table's head stride, and lengths that are multiples
# of 16 (the benchmark's 1K .. 32K, LEN_BUCKET always); OFF = Lk - Lq = 0 in training
_DIVISIBLE_INTS = {"s_qb", "s_qh", "s_ql", "s_kb", "s_kh", "s_kl", "s_vb", "s_vh", "s_vl", "s_eh",
                   "Lq", "Lk", "OFF", "LEN_BUCKET"}


def hinted_source(fn, constants: dict):
    """``ASTSource`` for an ahead-of-time compile with the specialization of a real launch: 16-byte
    aligned pointers and the divisible integers above carry ``tt.divisibility = 16``, as Triton's
    launcher marks them (without the hints the compiler assumes unaligned, unvectorizable accesses)."""
    from triton.compiler import ASTSource

    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            sig[name] = "constexpr"
        elif name in _POINTERS:
            sig[name] = _POINTER_TYPES.get(name, "*bf16")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif "scale" in name or name == "dropout_p":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name in _DIVISIBLE_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn, sig, constants, attrs=attrs)


def carried_kib(ttir: str, block_m: int, block_n: int) -> float:
    """KiB of ``(BLOCK_M, BLOCK_N)`` tiles carried from one iteration to the next by the kernel's band
    loop (the ``scf.for`` of the TTIR carrying the most of them).

    The skew carries r = BLOCK_M / BLOCK_N chunks of q.E^T (fp32) in the forward, and those plus r dS
    tiles (16-bit; packed two per int32 tile in the backward) in the backward: BLOCK_M^2 fp32, plus
    BLOCK_M^2 16-bit values, whatever r; nothing with q.E^T precomputed. Triton decides what a loop
    carries by comparing each name's value before and after one pass over the body, so a carry whose
    pre-loop value aliases another's can silently drop out of the compiled loop while the interpreter,
    which runs Python, stays right: this is the compiled kernel's own account.
    """
    import re

    width = {"f32": 4, "i32": 4, "bf16": 2, "f16": 2, "i16": 2}
    best = 0
    for line in ttir.splitlines():
        if "scf.for" in line and "iter_args" in line:
            types = re.findall(rf"tensor<{block_m}x{block_n}x(\w+)", line.split("->", 1)[-1])
            best = max(best, sum(width[t] for t in types))
    return best * block_m * block_n / 1024


def compile_report(args: argparse.Namespace) -> str:
    """Resource usage of each launch config, compiled ahead of time for an H100 / H200 (sm_90a) with
    the hints of a real launch: registers and spills from ptxas -v, shared memory from Triton,
    wgmma count from the SASS (HGMMA instructions), tile matmuls per band tile counted in the interpreter."""
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget

    from zoo.core_attention.kernels.relative_attention import triton as rk

    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    matmuls = _tile_matmul_counts()
    lines = ["| kernel | q.E^T | D | causal | dropout | BLOCK_M x BLOCK_N | warps | stages | regs | spill stores B | "
             "spill loads B | shared KiB | wgmma (HGMMA) | tile matmuls / band tile | carried KiB |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fn, configs in ((rk._fwd_kernel, rk._FWD_CONFIGS), (rk._bwd_kernel, rk._BWD_CONFIGS)):
        for d in args.dims:
            cfgs = [rk.default_config(fn.__name__, d)] if args.default_configs else configs
            for pre_qe, mode, dropout, cfg in itertools.product(args.qe, args.modes, args.dropout, cfgs):
                pre_qe = pre_qe == "precomputed"
                const = dict(D=d, CAUSAL=mode == "causal", HAS_KPM=False, DROPOUT=dropout == "on",
                             PRECISION="tf32", PRE_QE=pre_qe, **cfg.kwargs)
                if "SERIAL" in fn.arg_names:
                    const["SERIAL"] = False
                compiled = triton.compile(hinted_source(fn, const), target=GPUTarget("cuda", 90, 32),
                                          options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
                with tempfile.TemporaryDirectory() as tmp:
                    ptx, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
                    ptx.write_text(compiled.asm["ptx"])
                    # the flags Triton's own ptxas call uses, with -v
                    log = subprocess.run([tools / "ptxas", "-lineinfo", "-v", "--regAllocOptLevel=2",
                                          "--gpu-name=sm_90a", str(ptx), "-o", str(cubin)],
                                         capture_output=True, text=True, check=True).stderr
                    sass = subprocess.run([tools / "cuobjdump", "-sass", str(cubin)], capture_output=True,
                                          text=True, check=True).stdout
                regs = re.search(r"Used (\d+) registers", log)
                spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
                blocks = f"{cfg.kwargs['BLOCK_M']} x {cfg.kwargs['BLOCK_N']}"
                lines.append(
                    f"| {fn.__name__} | {'precomputed' if pre_qe else 'in-kernel'} | {d} | {mode} | "
                    f"{dropout} | {blocks} | "
                    f"{cfg.num_warps} | {cfg.num_stages} | {regs.group(1) if regs else '?'} | "
                    f"{spills.group(1) if spills else '?'} | {spills.group(2) if spills else '?'} | "
                    f"{compiled.metadata.shared / 1024:.0f} | {len(re.findall(r'HGMMA', sass))} | "
                    f"{matmuls[(fn.__name__, pre_qe)]} | "
                    f"{carried_kib(compiled.asm['ttir'], cfg.kwargs['BLOCK_M'], cfg.kwargs['BLOCK_N']):g} |")
                print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def compile_report_markdown(args: argparse.Namespace, table: str) -> str:
    import triton

    env = {
        "target": "sm_90a (H100 / H200), ahead-of-time: Triton's bundled ptxas, no GPU",
        "torch": torch.__version__, "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/relative_attention.py " + " ".join(sys.argv[1:]),
    }
    head = "\n".join(f"- {k}: {v}" for k, v in env.items())
    return (
        "# Relative-attention kernel: hinted sm_90 compile report\n\n" + head + "\n\n"
        "bf16 inputs, no key padding. Compiled with the specialization of a real launch: every pointer "
        "16-byte aligned and the strides and lengths divisible by 16 (`tt.divisibility = 16`). regs and "
        "spill bytes from `ptxas -v` with Triton's flags; shared memory from Triton's metadata; wgmma = "
        "HGMMA instructions in the SASS (static count); tile matmuls per band tile = `tl.dot` calls per "
        "band tile, counted in the interpreter (plain attention: forward 2, backward 5); carried KiB = "
        "the (BLOCK_M, BLOCK_N) tiles the compiled band loop carries between iterations (TTIR `scf.for`): "
        "the skew needs BLOCK_M^2 fp32 q.E^T values in the forward (16 KiB at BLOCK_M 64) and those plus "
        "BLOCK_M^2 16-bit dS values in the backward (24 KiB), 0 with q.E^T precomputed.\n\n" + table
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_report:
        print(f"hinted sm_90 compile report, D in {args.dims}, bf16, triton {__import__('triton').__version__}")
        report = compile_report_markdown(args, compile_report(args))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
            print(f"wrote {args.out}")
        return 0
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton's jit is imported
    elif not torch.cuda.is_available():
        print("benchmarks/relative_attention.py needs a CUDA GPU (none found); nothing measured. "
              "Run with --smoke to exercise the code path on CPU through the Triton interpreter.")
        return 0
    rows, info = run(args)
    table = markdown(rows, info, args)
    print(table)
    out = args.out
    if out is None and not args.smoke:
        slug = "".join(ch if ch.isalnum() else "_" for ch in info["device"].lower()).strip("_")
        out = ROOT / "benchmarks" / "results" / f"relative_attention_{slug}.md"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
