"""BoxRPB cross-attention at Plain-DETR's official size: materialized bias vs FlexAttention vs feature columns.

    python benchmarks/boxrpb_memory.py                 # CPU: 1800 queries, 84x50 map, 8 heads, D 32, batch 1 and 4
    python benchmarks/boxrpb_memory.py --iters 3       # on a GPU the same command measures CUDA memory

Three exact forms of the same attention (``zoo.core_attention.attention`` with ``positions.BoxRPB``):

* ``materialized`` -- ``backend="reference"``: the ``(B, H, Nq, H*W)`` bias and logits, as the official
  code builds them (about 242 MB of bias per image per layer in float32 at this size);
* ``flex``         -- ``backend="flex"``: the two axial tables indexed per score. On CPU FlexAttention runs
  eagerly (it materializes the scores itself) and has no backward, so only its forward is measured there;
* ``features``     -- ``backend="sdpa"`` with ``BoxRPB.qk_features``: ``Wf + Hf`` bias columns on q against
  one-hot column / row indicators on k, so SDPA / FlashAttention runs it, with autograd, in
  ``O(Nq (H + W))`` memory per head.

Each (form, batch, pass) runs in a fresh subprocess. On CPU, peak memory is the process's ``ru_maxrss``
high-water mark minus its value after the inputs and the MLPs are allocated (what the attention call adds,
the MLP evaluation included); on CUDA it is ``torch.cuda.max_memory_allocated`` minus the allocation
before the call. Time is the median of ``--iters`` calls after one warm-up.
Writes ``benchmarks/results/boxrpb_memory_{cpu,cuda}.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

FORMS = {"materialized": "reference", "flex": "flex", "features": "sdpa"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(form: str, batch: int, backward: bool, queries: int, hf: int, wf: int, heads: int, head_dim: int,
            iters: int, device: str) -> dict:
    from zoo.core_attention import attention, positions

    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    term = positions.BoxRPB(heads, hidden_dim=512, stride=16).to(dev)
    q = torch.randn(batch, heads, queries, head_dim, generator=gen).to(dev)
    k = torch.randn(batch, heads, hf * wf, head_dim, generator=gen).to(dev)
    v = torch.randn(batch, heads, hf * wf, head_dim, generator=gen).to(dev)
    boxes = torch.rand(batch, queries, 4, generator=gen).mul(0.8).add(0.1).to(dev)
    for t in (q, k, v):
        t.requires_grad_(backward)
    bound = term.bind(boxes=boxes, spatial_shape=(hf, wf))

    def call() -> None:
        with torch.set_grad_enabled(backward):
            out = attention(q, k, v, position=bound, backend=FORMS[form])
            if backward:
                out.sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        call()  # warm-up (compiles flex), then measure the peak of one call
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # a tiny call of the same form first: imports and one-time setup must not count as the call's peak
        tiny = term.bind(boxes=boxes[:1, :4], spatial_shape=(2, 2))
        with torch.no_grad():
            attention(q[:1, :, :4].detach(), k[:1, :, :4].detach(), v[:1, :, :4].detach(), position=tiny,
                      backend=FORMS[form])
        base = _rss_mb()
        call()
        peak = _rss_mb() - base
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"peak_mb": peak, "ms": 1000 * statistics.median(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1800)
    p.add_argument("--map", default="84x50", help="feature map HxW (stride 16 of 1333x800 is 84x50 after padding)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting, print JSON
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf, wf = (int(x) for x in args.map.split("x"))
    if args.one:
        form, batch, backward = json.loads(args.one)
        print(json.dumps(run_one(form, batch, backward, args.queries, hf, wf, args.heads, args.head_dim, args.iters,
                                 args.device)))
        return
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for backward in (False, True):
            for form in FORMS:
                if form == "flex" and backward and args.device == "cpu":
                    rows.append([batch, "fwd+bwd", form, "n/a (no CPU backward)", ""])
                    continue
                cmd = [sys.executable, __file__, "--queries", str(args.queries), "--map", args.map, "--heads",
                       str(args.heads), "--head-dim", str(args.head_dim), "--iters", str(args.iters), "--threads",
                       str(args.threads), "--device", args.device, "--one", json.dumps([form, batch, backward])]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    rows.append([batch, "fwd+bwd" if backward else "fwd", form, "failed: " + res.stderr.strip()[-120:], ""])
                    continue
                out = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append([batch, "fwd+bwd" if backward else "fwd", form, f"{out['peak_mb']:.0f}", f"{out['ms']:.0f}"])
                print(rows[-1], flush=True)
    bias_mb = args.queries * hf * wf * args.heads * 4 / 2**20
    what = ("ru_maxrss high-water mark added by the call (MB)" if args.device == "cpu"
            else "torch.cuda.max_memory_allocated added by the call (MB)")
    notes = f"""
Command: `python benchmarks/boxrpb_memory.py --queries {args.queries} --map {args.map} --heads {args.heads} --head-dim {args.head_dim} --batches {args.batches} --iters {args.iters} --threads {args.threads} --device {args.device}`.
float32, {args.queries} queries onto a {hf}x{wf} map ({hf * wf} keys), {args.heads} heads of dim {args.head_dim}, BoxRPB MLPs 2->512->{args.heads}.
"peak" is the {what}; time is the median of {args.iters} calls after one warm-up.
One dense bias is {bias_mb:.0f} MB per image; the feature columns are {args.queries * (hf + wf) * args.heads * 4 / 2**20:.1f} MB per image.
On CPU, SDPA's flash kernel takes the feature columns (head dim {args.head_dim} + {hf + wf} columns, padded to a multiple of 8);
eager FlexAttention on CPU materializes the scores, so its CPU memory says nothing about the compiled CUDA kernel.
Load average when the run ended: {", ".join(f"{x:.1f}" for x in os.getloadavg())} (a shared machine: times vary with it).
"""
    name = f"boxrpb_memory_{'cpu' if args.device == 'cpu' else 'cuda'}"
    write_result(name, f"BoxRPB cross-attention: memory and time of three exact forms ({args.device})",
                 ["batch", "pass", "form", "peak (MB)", "ms"], rows, notes)


if __name__ == "__main__":
    main()
