"""Generate music from a trained checkpoint: MIDI, a piano-roll PNG beside it and, optionally, a WAV.

    python -m zoo.music.generate --checkpoint checkpoints/music_transformer_chorales --out piece.mid
    python -m zoo.music.generate --checkpoint runs/.../checkpoints/last.ckpt --out piece.mid \\
        --primer primer.mid --length 1024 --temperature 0.9 --top_k 40 --top_p 0.95 --seed 0 --wav

``--checkpoint`` is a registered name with a shipped checkpoint, a pretrained directory
(``model.safetensors`` + ``config.json``) or a Lightning ``.ckpt`` written by ``zoo.music.train``.
Decoding uses a KV cache (relative attention included); ``--no_cache`` recomputes the prefix each
step (slower, same distribution).

A model plugs in through its registry entry (``zoo.hub.register_family(..., tokenizer=, sampler=)``):
``tokenizer(model)`` gives the object that reads a primer (``midi_to_tokens``, ``bos_id``) and writes
MIDI (``tokens_to_midi``), and ``sampler(model, tokenizer, primer, options)`` continues the primer.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.hub import create_model, find_pretrained, load_pretrained, load_weights_into, model_entry
from zoo.training.sampling import check_sampling

from .midi import write_outputs

__all__ = ["LoadedModel", "load_model_and_tokenizer", "generate_tokens", "main"]


@dataclass
class LoadedModel:
    name: str  # registered model name
    model: nn.Module
    tokenizer: Any
    meta: dict[str, Any]  # config.json contents (pretrained dirs) or Lightning hyper-parameters


def load_model_and_tokenizer(checkpoint: str | Path, device: str = "cpu") -> LoadedModel:
    """A model and its tokenizer from a name, a pretrained directory or a Lightning ``.ckpt``."""
    path = Path(checkpoint)
    if path.is_file() and path.suffix == ".ckpt":
        # hyper-parameters are plain data, so weights_only=True reads them without running code
        from zoo.hub.checkpoints import _torch_load

        ckpt = _torch_load(path)
        hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
        name = hparams.get("model_name")
        if not isinstance(name, str):
            raise ValueError(f"{path}: no 'model_name' hyper-parameter; was it written by zoo.music.train?")
        model = create_model(name, **(hparams.get("overrides") or {}))
        load_weights_into(model, path, prefix="model.")
        meta = hparams
    elif path.is_dir() or (isinstance(checkpoint, str) and "/" not in checkpoint and not path.suffix):
        model = load_pretrained(str(checkpoint))
        config_file = path if path.is_dir() else find_pretrained(str(checkpoint))
        meta = json.loads((config_file / "config.json").read_text())
        name = meta["model"]
    else:
        raise ValueError(
            f"--checkpoint {checkpoint}: expected a pretrained directory, a registered model name or a "
            "Lightning .ckpt file"
        )
    entry = model_entry(name)
    if entry.tokenizer is None or entry.sampler is None:
        raise ValueError(f"--checkpoint {checkpoint}: model {name!r} registers no tokenizer/sampler, so it cannot generate")
    tokenizer = entry.tokenizer(model)
    return LoadedModel(name, model.to(device).eval(), tokenizer, meta)


def check_context(context: int | None) -> None:
    """``--context``: None (the model's training context), 0 (the whole sequence) or a positive length."""
    if context is not None and context < 0:
        raise ValueError(f"--context must be >= 0 tokens (0: the whole sequence), got {context}")


def generate_tokens(loaded: LoadedModel, args: argparse.Namespace) -> list[int]:
    """Primer tokens (from ``args.primer`` or just BOS), then sampled continuation."""
    tok = loaded.tokenizer
    if args.primer:
        primer = tok.midi_to_tokens(args.primer, add_bos=True, add_eos=False)
    else:
        primer = [tok.bos_id]
    torch.manual_seed(args.seed)
    return model_entry(loaded.name).sampler(loaded.model, tok, primer, args)


# ---------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.music.generate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="registered name, pretrained dir or Lightning .ckpt")
    p.add_argument("--out", required=True, help="output .mid path (a .png, and with --wav a .wav, go beside it)")
    p.add_argument("--primer", default=None, help="MIDI file whose tokens start the piece")
    p.add_argument("--length", type=int, default=512, help="number of new tokens to sample")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wav", action="store_true", help="also write a synthesized .wav preview")
    p.add_argument("--no_cache", action="store_true", help="recompute the whole prefix each step")
    p.add_argument("--context", type=int, default=None,
                   help="predict each token from at most this many previous tokens (default: the model's "
                   "training context, config max_len; 0: the whole sequence)")
    p.add_argument("--free_voices", action="store_true",
                   help="chorale models: do not restrict each voice's tokens to its range (default: restricted)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: one-token decoding steps are too small to gain from more, "
                   "and extra threads slow them down badly on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    if args.length < 1:
        raise ValueError(f"--length must be >= 1, got {args.length}")
    check_context(args.context)
    check_sampling(args.temperature, args.top_k, args.top_p)  # before the model loads
    if Path(args.out).suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must end in .mid or .midi, got {args.out}")
    loaded = load_model_and_tokenizer(args.checkpoint, device=args.device)
    threads = torch.get_num_threads()
    if args.device == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        tokens = generate_tokens(loaded, args)
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests, notebooks)
    paths = write_outputs(tokens, loaded.tokenizer, args.out, wav=args.wav)
    print(f"generated {len(tokens)} tokens with {loaded.name}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return paths


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # bad arguments or files: one line naming them, no traceback
        raise SystemExit(f"python -m zoo.music.generate: error: {err}") from None
