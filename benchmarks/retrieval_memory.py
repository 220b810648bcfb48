"""Peak memory of the retrieval evaluation at 1,000 videos x 20,000 captions: chunked vs the official layout.

    python benchmarks/retrieval_memory.py                      # 1,000 x 20,000, X-Pool and mean pooling, CPU
    python benchmarks/retrieval_memory.py --videos 670 --captions 27000   # MSVD's test size

X-Pool scores a caption against a video through that caption's own pooled video embedding, so the
official evaluation holds a ``(videos, captions, 512)`` tensor: 41 GB in float32 at this size. Here the
``(captions, videos)`` similarity is computed by :func:`zoo.vision.retrieval.metrics.chunked_similarity`
in blocks of ``text_chunk`` captions x ``video_chunk`` videos, then scored by ``retrieval_metrics``.

Each setting runs in a fresh subprocess on precomputed embeddings (ViT-B/32 sizes: D = 512, 12 frames;
the head at its identity initialization, so the cost is the real one). Peak memory is the process's
``ru_maxrss`` high-water mark minus its value once the inputs are allocated: what the evaluation adds.
Writes ``benchmarks/results/retrieval_memory_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(model: str, videos: int, captions: int, frames: int, text_chunk: int, video_chunk: int) -> dict:
    import zoo
    from zoo.vision.retrieval.metrics import chunked_similarity, retrieval_metrics

    # only the head and the embedding width matter here: a CLIP of one tiny layer per tower, embed_dim 512
    net = zoo.create_model(model, vision_width=64, vision_layers=1, vision_heads=1, text_width=64, text_layers=1,
                           text_heads=1, image_size=32, patch_size=32, vocab_size=64).eval()
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(captions, 512, generator=gen)  # (T, D)
    frame_emb = torch.randn(videos, frames, 512, generator=gen)  # (V, F, D)
    video_of_text = torch.arange(captions) % videos
    base = _rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        sim = chunked_similarity(text, frame_emb, net.similarity, text_chunk=text_chunk, video_chunk=video_chunk)
        metrics = retrieval_metrics(sim, video_of_text)
    return {"seconds": time.perf_counter() - start, "peak_mb": _rss_mb() - base, "t2v_r1": metrics["t2v"]["R@1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=1000)
    p.add_argument("--captions", type=int, default=20000)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", default="xpool_vit_b32:512:64,meanpool_vit_b32:512:64",
                   help="comma-separated model:text_chunk:video_chunk")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting, print JSON
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(m, int(tc), int(vc)) for m, tc, vc in (item.split(":") for item in args.settings.split(","))]
    if args.one:
        model, tc, vc = json.loads(args.one)
        print(json.dumps(run_one(model, args.videos, args.captions, args.frames, tc, vc)))
        return
    rows = []
    for model, tc, vc in settings:
        cmd = [sys.executable, __file__, "--videos", str(args.videos), "--captions", str(args.captions), "--frames",
               str(args.frames), "--threads", str(args.threads), "--one", json.dumps([model, tc, vc])]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        block_mb = tc * vc * 512 * 4 / 2**20
        rows.append([model, f"{tc} x {vc}", f"{block_mb:.0f}", f"{out['peak_mb']:.0f}", f"{out['seconds']:.1f}"])
    full_gb = args.videos * args.captions * 512 * 4 / 1e9
    notes = f"""
Command: `python benchmarks/retrieval_memory.py --videos {args.videos} --captions {args.captions} --threads {args.threads} --settings {args.settings}`.
{args.videos:,} videos x {args.captions:,} captions, {args.frames} frames, D = 512, float32, precomputed embeddings.
"block" is one `(video_chunk, text_chunk, 512)` pooled-embedding tensor; "peak" is what the similarity + metrics
add to the process's peak resident memory (the `(captions, videos)` similarity itself is {args.videos * args.captions * 4 / 2**20:.0f} MB).
The official evaluation materializes all pooled embeddings at once: {full_gb:.1f} GB for this size (computed, not run).
Load average when the run ended: {", ".join(f"{x:.1f}" for x in os.getloadavg())} (a shared machine: times vary with it).
"""
    write_result("retrieval_memory_cpu", "X-Pool evaluation: peak memory of the chunked similarity (CPU)",
                 ["model", "text_chunk x video_chunk", "block (MB)", "peak added (MB)", "seconds"], rows, notes)


if __name__ == "__main__":
    main()
