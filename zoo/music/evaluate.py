"""Evaluate any music checkpoint: the task's own metrics per split, and musical statistics of samples.

    python -m zoo.music.evaluate --checkpoint checkpoints/music_transformer_chorales
    python -m zoo.music.evaluate --checkpoint checkpoints/ripo_folk --splits test
    python -m zoo.music.evaluate --checkpoint runs/.../last.ckpt \\
        --data_path ../shared/data/jsb_chorales/Jsb16thSeparated.npz --splits val test --max_len 1024
    python -m zoo.music.evaluate --checkpoint checkpoints/music_transformer_chorales --splits \\
        --sample_stats 10 --temperature 0.9 --top_k 20 --top_p 0.9

``--checkpoint`` is a registered name with a shipped checkpoint, a pretrained directory or a
Lightning ``.ckpt``. The metrics are exactly what the task's LightningModule logs in ``test``
(Music Transformer: NLL in nats/token, perplexity, accuracy; RIPO: pitch and duration NLL and
accuracy), computed by that module's own ``evaluate`` (:meth:`ZooModule.evaluate_loader`) on the
data its tokenizer reads: chorales (music21's, or ``--data_path``: a JSB pickle / npz / json),
MIDI folders for performance models, melodies (music21's folk songs, or a folder) for RIPO. Every
token of every piece is scored exactly once, in consecutive windows of ``--max_len`` tokens.

``--sample_stats N`` (chorale models) samples N pieces of ``--length`` tokens and prints the
statistics of :mod:`zoo.music.lm.stats` beside the same numbers for the real test chorales.
Every argument is checked before the model loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from zoo.hub import model_entry
from zoo.training.sampling import check_sampling

from .generate import LoadedModel, check_context, load_model_and_tokenizer

__all__ = ["build_parser", "check_args", "task_of", "evaluate_checkpoint", "sample_statistics", "main"]

SPLIT_SLOT = {"train": "test", "val": "val", "test": "test"}  # the metric slot each split is scored in


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.music.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="registered name, pretrained dir or Lightning .ckpt")
    p.add_argument("--data_path", default=None, help="JSB pickle/npz/json, MIDI or melody folder (default: built-in)")
    p.add_argument("--splits", nargs="*", default=["val", "test"], choices=["train", "val", "test"],
                   help="splits to score (none with --sample_stats only)")
    p.add_argument("--max_len", type=int, default=None, help="window length (default: the checkpoint's eval_window, else the model's max_len)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--add_eos", choices=["auto", "yes", "no"], default="auto",
                   help="chorales: score an EOS after each piece (auto: yes for 'chorale', no for 'jsb16th')")
    p.add_argument("--val_percent", type=int, default=10, help="melody folders: the split's val share (as in training)")
    p.add_argument("--test_percent", type=int, default=10, help="melody folders: the split's test share (as in training)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="Music Transformer: also write the model as a pretrained directory with these metrics in its card")
    p.add_argument("--card_notes", default="", help="markdown appended to the exported model card")
    p.add_argument("--sample_stats", type=int, default=0, metavar="N",
                   help="chorale models: sample N pieces and report their musical statistics beside the real test chorales'")
    p.add_argument("--length", type=int, default=1024, help="--sample_stats: tokens per sample (4 per 16th step)")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top_k", type=int, default=20)
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling (0.9: the chorale defaults; 1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context", type=int, default=None,
                   help="--sample_stats: predict each token from at most this many previous tokens (default: the "
                   "model's training context, config max_len; 0: the whole sequence)")
    p.add_argument("--free_voices", action="store_true",
                   help="--sample_stats: sample without the per-voice token constraint (to measure the model alone)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every number printed as JSON")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model (so a typo costs no minutes)."""
    if args.max_len is not None and args.max_len < 2:
        raise ValueError(f"--max_len must be >= 2, got {args.max_len}")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.sample_stats < 0:
        raise ValueError(f"--sample_stats must be >= 0, got {args.sample_stats}")
    if args.sample_stats:
        if args.length < 4:
            raise ValueError(f"--length must be >= 4 (one step of four voices), got {args.length}")
        check_sampling(args.temperature, args.top_k, args.top_p)
        check_context(args.context)
    if not args.splits and not args.sample_stats:
        raise ValueError("nothing to do: give --splits, --sample_stats N, or both")
    if args.export and not args.splits:
        raise ValueError("--export writes the split metrics into the model card: give --splits")
    if args.data_path is not None and not Path(args.data_path).exists():
        raise ValueError(f"--data_path {args.data_path}: no such file or directory")
    if args.json is not None and Path(args.json).suffix != ".json":
        raise ValueError(f"--json must end in .json, got {args.json}")


def task_of(name: str) -> str:
    """``"lm"`` or ``"melody"``: the music task package that registers ``name``."""
    module = model_entry(name).module
    for task in ("lm", "melody"):
        if module.startswith(f"zoo.music.{task}."):
            return task
    raise ValueError(f"--checkpoint: model {name!r} ({module}) is not a music model")


def _overrides(meta: dict[str, Any]) -> dict[str, Any]:
    """The config overrides a checkpoint was built with (Lightning hparams, or a pretrained dir's config)."""
    from zoo.hub.config import RUNTIME_FIELDS

    overrides = meta.get("overrides") if "model_name" in meta else meta.get("config")
    return {k: v for k, v in (overrides or {}).items() if k not in RUNTIME_FIELDS and k != "backend"}


def _task_module(loaded: LoadedModel) -> Any:
    """The task's LightningModule around the loaded network (its ``evaluate`` and metrics)."""
    task = task_of(loaded.name)
    if task == "lm":
        from .lm.module import MusicLM as cls
    else:
        from .melody.module import MelodyLM as cls
    module = cls(model_name=loaded.name, overrides=_overrides(loaded.meta))
    module.model.load_state_dict(loaded.model.state_dict(), strict=True)  # same config: same keys and shapes
    return module


def _datamodule(loaded: LoadedModel, args: argparse.Namespace, max_len: int) -> Any:
    if task_of(loaded.name) == "melody":
        from .melody.data import MelodyDataModule

        cfg = loaded.model.config
        return MelodyDataModule(
            path=args.data_path, seq_len=max_len, batch_size=args.batch_size,
            duration_step=cfg.duration_step, max_duration_steps=cfg.duration_vocab - 1,
            val_percent=args.val_percent, test_percent=args.test_percent,
        )
    from .lm.evaluate import make_datamodule

    add_eos = None if args.add_eos == "auto" else args.add_eos == "yes"
    return make_datamodule(loaded.tokenizer.kind, args.data_path, max_len, args.batch_size, add_eos=add_eos)


def _split_dataset(dm: Any, split: str) -> Any:
    ds = dm.datasets[split]
    if split == "train" and getattr(ds, "train", False):
        # score the training pieces like the held-out ones: every window, no augmentation
        from .lm.data import TokenSequenceDataset

        ds = TokenSequenceDataset(ds.pieces, ds.make_tokens, dm.max_len, train=False, align=ds.align)
    return ds


def evaluate_checkpoint(loaded: LoadedModel, dm: Any, splits: list[str], device: str = "cpu") -> dict[str, dict[str, float]]:
    """The task's test metrics of ``loaded`` on each split of ``dm``."""
    module = _task_module(loaded).to(device)
    module.check_data(dm)
    dm.setup("test")
    out = {}
    for split in splits:
        loader = DataLoader(_split_dataset(dm, split), batch_size=dm.batch_size, shuffle=False, collate_fn=dm.collate_fn())
        out[split] = module.evaluate_loader(loader, SPLIT_SLOT[split])
    return out


def sample_statistics(loaded: LoadedModel, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``{"samples": summary, "real test chorales": summary}`` of :mod:`zoo.music.lm.stats`."""
    from .lm.data import ChoralesDataModule
    from .lm.stats import chorale_stats, summarize

    tok = loaded.tokenizer
    if not hasattr(tok, "voice_token_mask"):
        raise ValueError(f"--sample_stats: {loaded.name} is not a four-voice chorale model")
    step_seconds = 60.0 / 90.0 / 4.0  # the tokenizers' MIDI tempo, 90 bpm, 16th-note steps
    entry = model_entry(loaded.name)
    samples = []
    for i in range(args.sample_stats):
        options = argparse.Namespace(**{**vars(args), "seed": args.seed + i, "no_cache": False})
        torch.manual_seed(options.seed)
        tokens = entry.sampler(loaded.model, tok, [tok.bos_id], options)
        grid = tok.decode(tokens)
        if len(grid):
            samples.append(chorale_stats(grid, step_seconds))
    real_dm = ChoralesDataModule(path=args.data_path, representation=tok.kind, max_len=64, batch_size=1)
    real_dm.setup("test")
    real = [chorale_stats(g, step_seconds) for g in real_dm.splits["test"]]
    return {"samples": summarize(samples), "real test chorales": summarize(real)}


def _print_metrics(name: str, data: str, window: int, results: dict[str, dict[str, float]]) -> None:
    print(f"{name}  data={data}  window={window}")
    names = list(next(iter(results.values())))
    print(f"{'split':<6} " + " ".join(f"{n:>13}" for n in names))
    for split, r in results.items():
        print(f"{split:<6} " + " ".join(f"{r[n]:>13.4f}" for n in names))


def _print_stats(stats: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    decoding = "free voices" if args.free_voices else "voice-constrained"
    print(f"sample statistics: {args.sample_stats} samples of {args.length} tokens, temperature {args.temperature}, "
          f"top_k {args.top_k}, top_p {args.top_p}, {decoding}")
    cols = ["out_of_range", "crossing", "longest_chord_s", "max_longest_chord_s", "pieces_frozen", "in_key",
            "pc_entropy", "repetition", "pieces"]
    print(f"{'':<20} " + " ".join(f"{c:>19}" for c in cols))
    for row, s in stats.items():
        print(f"{row:<20} " + " ".join(f"{s[c]:>19.3f}" for c in cols))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    check_args(args)
    loaded = load_model_and_tokenizer(args.checkpoint, device=args.device)
    if args.export and task_of(loaded.name) != "lm":
        raise ValueError(f"--export: model cards are written for Music Transformer checkpoints, not {loaded.name!r}")
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "model": loaded.name}
    if args.splits:
        max_len = args.max_len or int(loaded.meta.get("eval_window") or loaded.model.config.max_len)
        dm = _datamodule(loaded, args, max_len)
        results = evaluate_checkpoint(loaded, dm, list(args.splits), device=args.device)
        _print_metrics(loaded.name, args.data_path or "default", max_len, results)
        report.update(window=max_len, metrics=results)
        if args.export:
            _export(loaded, args, results, max_len)
    if args.sample_stats:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one-token decoding steps: more threads only add synchronization
        try:
            stats = sample_statistics(loaded, args)
        finally:
            torch.set_num_threads(threads)
        _print_stats(stats, args)
        report["sample_stats"] = stats
        report["sampling"] = {k: getattr(args, k) for k in ("length", "temperature", "top_k", "top_p", "seed", "free_voices", "context")}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def _export(loaded: LoadedModel, args: argparse.Namespace, results: dict[str, dict[str, float]], window: int) -> None:
    from zoo.hub import save_pretrained

    from .lm.evaluate import model_card

    data = args.data_path or ("generated MIDI folder" if loaded.tokenizer.kind == "performance"
                              else "music21's Bach chorales, fixed split (zoo.music.lm.data)")
    card = model_card(loaded.name, loaded.model, results, window, data, args.card_notes)
    metrics = {f"{split}_{k}": v for split, r in results.items() for k, v in r.items()}
    out = save_pretrained(loaded.model, args.export, name=loaded.name, config=loaded.model.config, card=card,
                          metadata={"metrics": metrics, "eval_window": window, "data": data})
    print(f"exported {out}")


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # bad arguments or files: one line naming them, no traceback
        raise SystemExit(f"python -m zoo.music.evaluate: error: {err}") from None
