"""Generate music from a trained checkpoint: MIDI, a piano-roll PNG beside it and, optionally, a WAV.

    python -m zoo.music.generate --checkpoint checkpoints/music_transformer_chorales --out piece.mid
    python -m zoo.music.generate --checkpoint runs/.../checkpoints/last.ckpt --out piece.mid \\
        --primer primer.mid --length 1024 --temperature 0.9 --top_k 40 --top_p 0.95 --seed 0 --wav

``--checkpoint`` is a registered name with a shipped checkpoint, a pretrained directory
(``model.safetensors`` + ``config.json``) or a Lightning ``.ckpt`` written by ``zoo.music.train``.
Decoding uses a KV cache (relative attention included); ``--no_cache`` recomputes the prefix each
step (slower, same distribution).

Model families plug in through two tables keyed by the registered model name's prefix:
``TOKENIZER_BUILDERS`` (model -> tokenizer) and ``SAMPLERS`` (model, tokenizer, primer, args -> tokens).
"""

from __future__ import annotations

import argparse
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.hub import create_model, load_pretrained, load_weights_into

from .tokenizers import tokenizer_from_config

__all__ = [
    "LoadedModel",
    "load_model_and_tokenizer",
    "generate_tokens",
    "write_outputs",
    "save_piano_roll",
    "save_wav",
    "main",
    "TOKENIZER_BUILDERS",
    "SAMPLERS",
]


@dataclass
class LoadedModel:
    name: str  # registered model name
    model: nn.Module
    tokenizer: Any
    meta: dict[str, Any]  # config.json contents (pretrained dirs) or Lightning hyper-parameters


def _music_transformer_tokenizer(model: nn.Module) -> Any:
    return tokenizer_from_config({"kind": model.config.tokenizer})


# prefix of the registered model name -> how to build its tokenizer
TOKENIZER_BUILDERS: dict[str, Callable[[nn.Module], Any]] = {
    "music_transformer": _music_transformer_tokenizer,
}


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    for prefix in sorted(table, key=len, reverse=True):
        if name.startswith(prefix):
            return table[prefix]
    raise ValueError(f"no {what} for model {name!r}; known prefixes: {sorted(table)}")


def load_model_and_tokenizer(checkpoint: str | Path, device: str = "cpu") -> LoadedModel:
    """A model and its tokenizer from a name, a pretrained directory or a Lightning ``.ckpt``."""
    import zoo.music.models  # noqa: F401  (registers the music models)

    path = Path(checkpoint)
    if path.is_file() and path.suffix == ".ckpt":
        # hyper-parameters are plain data, so weights_only=True reads them without running code
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        hparams = dict(ckpt.get("hyper_parameters") or {})
        name = hparams.get("model_name")
        if not isinstance(name, str):
            raise ValueError(f"{path}: no 'model_name' hyper-parameter; was it written by zoo.music.train?")
        model = create_model(name, **(hparams.get("overrides") or {}))
        load_weights_into(model, path, prefix="model.")
        meta = hparams
    elif path.is_dir() or (isinstance(checkpoint, str) and "/" not in checkpoint and not path.suffix):
        model = load_pretrained(str(checkpoint))
        config_file = (path if path.is_dir() else None) or _pretrained_dir(str(checkpoint))
        meta = json.loads((config_file / "config.json").read_text())
        name = meta["model"]
    else:
        raise ValueError(
            f"--checkpoint {checkpoint}: expected a pretrained directory, a registered model name or a "
            "Lightning .ckpt file"
        )
    tokenizer = _lookup(TOKENIZER_BUILDERS, name, "tokenizer builder")(model)
    return LoadedModel(name, model.to(device).eval(), tokenizer, meta)


def _pretrained_dir(name: str) -> Path:
    from zoo.hub import find_pretrained

    return find_pretrained(name)


def _sample_music_transformer(model: nn.Module, tokenizer: Any, primer: list[int], args: argparse.Namespace) -> list[int]:
    device = next(model.parameters()).device
    prompt = torch.tensor([primer], dtype=torch.long, device=device)  # (1, L0)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    out = model.generate(
        prompt, args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        eos_id=tokenizer.eos_id, use_cache=not args.no_cache, generator=gen,
    )
    return out[0].tolist()


# prefix of the registered model name -> sampler(model, tokenizer, primer tokens, args) -> tokens
SAMPLERS: dict[str, Callable[[nn.Module, Any, list[int], argparse.Namespace], list[int]]] = {
    "music_transformer": _sample_music_transformer,
}

# RIPO and its baselines (ripo_*): (pitch, duration) melodies, see zoo.music.melody
from .melody import MelodyMidiTokenizer, sample_melody  # noqa: E402

TOKENIZER_BUILDERS["ripo"] = MelodyMidiTokenizer.for_model
SAMPLERS["ripo"] = sample_melody


def generate_tokens(loaded: LoadedModel, args: argparse.Namespace) -> list[int]:
    """Primer tokens (from ``args.primer`` or just BOS), then sampled continuation."""
    tok = loaded.tokenizer
    if args.primer:
        primer = tok.midi_to_tokens(args.primer, add_bos=True, add_eos=False)
    else:
        primer = [tok.bos_id]
    torch.manual_seed(args.seed)
    return _lookup(SAMPLERS, loaded.name, "sampler")(loaded.model, tok, primer, args)


# ---------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------
def save_piano_roll(pm: Any, path: str | Path, fs: int = 50) -> Path:
    """A piano-roll PNG: one colour per track, time in seconds on x, MIDI pitch on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    end = max(pm.get_end_time(), 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, end / 2)), 4), dpi=100)
    colors = plt.get_cmap("tab10")
    pitches = [n.pitch for inst in pm.instruments for n in inst.notes]
    for i, inst in enumerate(pm.instruments):
        for n in inst.notes:
            ax.add_patch(plt.Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8, color=colors(i % 10), lw=0))
        ax.plot([], [], color=colors(i % 10), label=inst.name or f"track {i}", lw=6)
    lo, hi = (min(pitches) - 2, max(pitches) + 2) if pitches else (48, 84)
    ax.set_xlim(0, end)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    if len(pm.instruments) > 1:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_wav(pm: Any, path: str | Path, sample_rate: int = 22050) -> Path:
    """A simple preview: pretty_midi's additive sine synthesis, 16-bit mono."""
    path = Path(path)
    audio = pm.synthesize(fs=sample_rate)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    pcm = (audio / peak * 0.9 * 32767 if peak > 0 else audio).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def write_outputs(tokens: list[int], tokenizer: Any, out: str | Path, wav: bool = False) -> dict[str, Path]:
    """Write ``out`` (.mid), the piano roll ``out.png`` and optionally ``out.wav``; returns the paths."""
    out = Path(out)
    if out.suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"--out must end in .mid or .midi, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pm = tokenizer.tokens_to_midi(tokens)
    pm.write(str(out))
    paths = {"midi": out, "png": save_piano_roll(pm, out.with_suffix(".png"))}
    if wav:
        paths["wav"] = save_wav(pm, out.with_suffix(".wav"))
    return paths


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
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: one-token decoding steps are too small to gain from more, "
                   "and extra threads slow them down badly on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    if args.length < 1:
        raise ValueError(f"--length must be >= 1, got {args.length}")
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
    main()
