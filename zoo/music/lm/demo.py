"""``make demo``: train a small Music Transformer on Bach chorales, report NLL, write a new chorale.

    python -m zoo.music.lm.demo                     # a fixed 400 steps: 3.6 minutes on 2 busy CPU cores
    python -m zoo.music.lm.demo --steps 100 --out_dir runs/music_demo_quick

Steps: music21's bundled chorales (parsed once, then cached) -> the ``music_transformer_demo`` config
trained with Lightning (progress bar) -> validation NLL in nats/token -> a chorale sampled with the
KV cache -> ``<out_dir>/chorale.mid`` and its piano roll ``<out_dir>/chorale.png``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.music.lm.demo", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400, help="optimizer steps (the demo always trains exactly these)")
    p.add_argument("--window", type=int, default=128, help="training window in tokens (4 per 16th step)")
    p.add_argument("--max_minutes", type=float, default=10.0,
                   help="safety net only: stop training after this many minutes (the summary says so if it is hit)")
    p.add_argument("--out_dir", default="runs/music_demo")
    p.add_argument("--length", type=int, default=512, help="tokens to generate (4 per 16th note)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wav", action="store_true", help="also write a synthesized .wav preview")
    return p


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from ..midi import write_outputs
    from .data import ChoralesDataModule
    from .module import MusicLM

    t0 = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, verbose=False)

    print("[1/4] loading music21's Bach chorales (first run parses and caches them, ~1 min)")
    dm = ChoralesDataModule(representation="chorale", max_len=args.window, batch_size=16, transpose=3)
    dm.setup("fit")
    print(f"      pieces: train {len(dm.splits['train'])}, valid {len(dm.splits['val'])}, "
          f"test {len(dm.splits['test'])}")

    print(f"[2/4] training music_transformer_demo for {args.steps} steps of 16 x {args.window} tokens")
    t_train = time.time()
    lm = MusicLM("music_transformer_demo", overrides={"attention_backend": "sdpa"}, lr=2e-3, warmup_steps=50,
                 min_lr_ratio=0.05)
    trainer = pl.Trainer(
        max_steps=args.steps, max_time={"minutes": args.max_minutes}, gradient_clip_val=1.0,
        enable_checkpointing=False, logger=False, enable_progress_bar=True, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(out_dir),
    )
    trainer.fit(lm, datamodule=dm)
    trained, train_min = trainer.global_step, (time.time() - t_train) / 60
    capped = trained < args.steps

    print("[3/4] validation")
    eval_trainer = pl.Trainer(logger=False, enable_progress_bar=True, enable_model_summary=False,
                              default_root_dir=str(out_dir))
    metrics = eval_trainer.validate(lm, datamodule=dm, verbose=False)[0]
    nll = float(metrics["val/nll"])
    print(f"validation NLL: {nll:.4f} nats/token (perplexity {float(metrics['val/ppl']):.3f}, "
          f"next-token accuracy {float(metrics['val/acc']):.3f}) on {len(dm.splits['val'])} held-out chorales")

    print("[4/4] generating a chorale with the KV cache")
    model = lm.model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-token steps: more threads only add synchronization cost
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.tensor([[dm.tokenizer.bos_id]])
    allowed = torch.from_numpy(dm.tokenizer.voice_token_mask())  # each voice keeps to its own range
    tokens = model.generate(prompt, args.length, temperature=0.9, top_k=20, top_p=0.9, eos_id=dm.tokenizer.eos_id,
                            generator=gen, allowed=allowed, context=args.window)[0].tolist()  # the training window
    torch.set_num_threads(threads)
    paths = write_outputs(tokens, dm.tokenizer, out_dir / "chorale.mid", wav=args.wav)
    lm.save_pretrained(out_dir / "model", metadata={"val_nll": nll, "source": "zoo.music.lm.demo"})
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print("\nsummary")
    print(f"  trained   {trained} of {args.steps} steps in {train_min:.1f} min"
          + (f"  ** STOPPED BY THE {args.max_minutes:g}-MINUTE SAFETY CAP: the numbers below are from a shorter run **"
             if capped else ""))
    print(f"  val NLL   {nll:.4f} nats/token")
    print(f"  total     {(time.time() - t0) / 60:.1f} min")
    return {"val_nll": nll, "steps": trained, "capped": capped, **{k: str(v) for k, v in paths.items()}}


if __name__ == "__main__":
    main()
