"""Training and inference throughput (images/s) of the zoo's classifiers against timm's at 224x224.

    python benchmarks/vision_classification.py                       # CPU: batch 8 infer / 4 train
    python benchmarks/vision_classification.py --device cuda --batch-size 64 --train-batch-size 32 --iters 20

Models: ``astroformer_0`` (timm MaxxVit layout, attention through the zoo core with RelativeBias2D) and
``crossformer_t`` (dynamic position bias, SDA/LDA groups) against timm's ``coatnet_0_224`` (CoAtNet-0:
the closest timm relative of Astroformer) and ``swin_tiny_patch4_window7_224``. Every model gets
10 classes (the head does not matter at this size), float32 (bf16 autocast on CUDA with ``--amp``),
``iters`` timed steps after ``warmup`` untimed ones. Training is forward + backward + AdamW step.
Writes ``benchmarks/results/vision_classification_<device>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import zoo.vision.classification.models  # noqa: E402,F401  (registers astroformer_* / crossformer_* with timm)

MODELS = {
    "astroformer_0": dict(img_size=224),
    "crossformer_t": {},
    "coatnet_0_224": {},
    "swin_tiny_patch4_window7_224": {},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(model: torch.nn.Module, batch: int, size: int, device: torch.device, train: bool, warmup: int, iters: int, amp: bool) -> float:
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    model.train(train)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y) if train else None
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ctx = contextlib.nullcontext() if train else torch.inference_mode()
    with ctx:
        for _ in range(warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
    return batch * iters / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8, help="inference batch")
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=10, **MODELS.get(name, {})).to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        infer = throughput(model, args.batch_size, args.img_size, device, False, args.warmup, args.iters, args.amp)
        train = throughput(model, args.train_batch_size, args.img_size, device, True, args.warmup, args.iters, args.amp)
        source = "zoo" if name in ("astroformer_0", "crossformer_t") else "timm"
        rows.append([name, source, f"{params:.1f}", f"{infer:.1f}", f"{train:.1f}"])
        print(rows[-1], flush=True)
        del model
    dev = "cuda" if device.type == "cuda" else "cpu"
    notes = (
        f"Command: `python benchmarks/vision_classification.py {' '.join(argv if argv is not None else sys.argv[1:])}`.\n"
        f"Input {args.img_size}x{args.img_size}, inference batch {args.batch_size}, training batch "
        f"{args.train_batch_size} (forward + backward + AdamW), {args.warmup} warm-up + {args.iters} timed "
        f"iterations, {'bf16 autocast' if args.amp else 'float32'}. The zoo models run attention through "
        "`zoo.core_attention.attention(backend='auto')`: the materialized-bias reference path on CPU, "
        "FlexAttention with the table score_mod on CUDA.\n"
        f"Load average when the run ended: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(a shared machine: other processes compete for the cores, so compare rows of one run only)."
    )
    write_result(
        f"vision_classification_{dev}",
        f"Image classifiers: images/s at {args.img_size}x{args.img_size} ({dev.upper()})",
        ["model", "code", "params (M)", "inference img/s", "training img/s"],
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
