"""Music Transformer generation speed: KV-cached vs uncached decoding, tokens per second.

Uncached decoding recomputes the whole prefix at every step (O(n^2) token-layer passes for n tokens);
the cached path runs one token per step against the per-layer KV caches, relative attention included.
Both sample the same tokens from the same seed (the cache is exact), so only the time differs.

    python benchmarks/music_generation.py                        # small piano model, 512/1024/2048, CPU
    python benchmarks/music_generation.py --variant music_transformer_piano --full --device cuda
    python benchmarks/music_generation.py --lengths 512 --uncached_max 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import zoo  # noqa: E402
import zoo.music.lm.models  # noqa: E402,F401

SMALL = {"num_layers": 2, "d_model": 128, "num_heads": 4, "d_ff": 512, "dropout": 0.0, "attn_dropout": 0.0}


def time_generation(model: torch.nn.Module, length: int, use_cache: bool, device: str) -> tuple[float, torch.Tensor]:
    prompt = torch.tensor([[model.config.vocab_size - 2]], device=device)  # BOS of the performance vocabulary
    gen = torch.Generator(device=device).manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(prompt, length, temperature=1.0, top_k=50, use_cache=use_cache, generator=gen)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="music_transformer_piano")
    p.add_argument("--full", action="store_true", help="use the variant's full config instead of the small one")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--uncached_max", type=int, default=2048, help="skip uncached runs longer than this")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", default=None, help="results file name (default music_generation_<device>)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = zoo.create_model(args.variant, **({} if args.full else SMALL)).to(args.device).eval()
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for length in args.lengths:
        cached_s, cached_out = time_generation(model, length, True, args.device)
        row = [length, f"{length / cached_s:.1f}", f"{cached_s:.2f}"]
        if length <= args.uncached_max:
            uncached_s, uncached_out = time_generation(model, length, False, args.device)
            same = "yes" if torch.equal(cached_out, uncached_out) else "no"
            row += [f"{length / uncached_s:.1f}", f"{uncached_s:.2f}", f"{uncached_s / cached_s:.1f}x", same]
        else:
            row += ["skipped", "-", "-", "-"]
        rows.append(row)
        print(row, flush=True)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    title = (
        f"Music Transformer generation, KV cache vs recomputation ({args.variant}"
        f"{'' if args.full else ' small'}: {cfg.num_layers} layers, d_model {cfg.d_model}, {cfg.num_heads} heads, "
        f"relative distance {cfg.max_distance}, vocab {cfg.vocab_size}, {params / 1e6:.2f} M params; batch 1, "
        "top-k 50 sampling)"
    )
    notes = (
        "tokens/s = generated tokens / wall time of the whole generation (one prompt token). "
        "'same tokens' checks that cached and uncached decoding sampled identical sequences from one seed.\n"
        f"Command: python benchmarks/music_generation.py {' '.join(argv or sys.argv[1:])}"
    )
    write_result(
        args.name or f"music_generation_{device}", title,
        ["tokens", "cached tok/s", "cached s", "uncached tok/s", "uncached s", "speed-up", "same tokens"],
        rows, notes=notes,
    )


if __name__ == "__main__":
    main()
