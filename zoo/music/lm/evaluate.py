"""Print NLL (nats/token), perplexity and next-token accuracy per split for a music checkpoint.

    python -m zoo.music.lm.evaluate --checkpoint checkpoints/music_transformer_chorales
    python -m zoo.music.lm.evaluate --checkpoint runs/.../last.ckpt \\
        --data_path ../shared/data/jsb_chorales/Jsb16thSeparated.npz --splits val test --max_len 1024

The data follow the checkpoint's tokenizer: ``chorale`` / ``jsb16th`` models read chorales
(music21's by default, or ``--data_path``: a JSB pickle / ``Jsb16thSeparated`` file), ``performance``
models read MIDI folders (``--data_path``, or the generated default). Every token of every piece is
scored exactly once, in consecutive windows of ``--max_len`` tokens (no context carried across
windows).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

from ..generate import load_model_and_tokenizer
from .data import ChoralesDataModule, PerformanceDataModule, TokenSequenceDataset
from .metrics import token_nll

__all__ = ["evaluate_loader", "make_datamodule", "evaluate_splits", "main"]


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Any, pad_id: int, device: str = "cpu") -> dict[str, float]:
    """Token-weighted NLL, perplexity and accuracy of ``model`` over a loader of ``{"tokens": ...}``."""
    model.eval()
    total_nll, total_count, total_correct = 0.0, 0, 0
    for batch in loader:
        tokens = batch["tokens"].to(device)  # (B, L + 1)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = model(inputs)  # (B, L, V)
        nll, count = token_nll(logits, targets, pad_id)
        total_nll += float(nll)
        total_count += int(count)
        total_correct += int(((logits.argmax(-1) == targets) & (targets != pad_id)).sum())
    if total_count == 0:
        raise ValueError("evaluation data holds no tokens")
    nll = total_nll / total_count
    return {"nll": nll, "ppl": math.exp(nll), "acc": total_correct / total_count, "tokens": total_count}


def make_datamodule(
    tokenizer_kind: str, data_path: str | None, max_len: int, batch_size: int, add_eos: bool | None = None
) -> ChoralesDataModule | PerformanceDataModule:
    if tokenizer_kind in ("chorale", "jsb16th"):
        eos = (tokenizer_kind == "chorale") if add_eos is None else add_eos
        return ChoralesDataModule(
            path=data_path, representation=tokenizer_kind, max_len=max_len, batch_size=batch_size,
            transpose=0, add_eos=eos,
        )
    if tokenizer_kind == "performance":
        return PerformanceDataModule(path=data_path, max_len=max_len, batch_size=batch_size)
    raise ValueError(f"no datamodule for tokenizer {tokenizer_kind!r}")


def evaluate_splits(
    model: nn.Module, dm: Any, splits: list[str], device: str = "cpu"
) -> dict[str, dict[str, float]]:
    dm.setup("test")
    out = {}
    for split in splits:
        if split not in dm.datasets:
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        ds = dm.datasets[split]
        if split == "train":
            # score the training pieces like the held-out ones (all windows, no augmentation)
            ds = TokenSequenceDataset(ds.pieces, ds.make_tokens, dm.max_len, train=False, align=ds.align)
        loader = torch.utils.data.DataLoader(ds, batch_size=dm.batch_size, shuffle=False, collate_fn=dm.collate_fn())
        out[split] = evaluate_loader(model, loader, dm.tokenizer.pad_id, device=device)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.music.lm.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="registered name, pretrained dir or Lightning .ckpt")
    p.add_argument("--data_path", default=None, help="JSB pickle/npz/json or MIDI folder (default: built-in)")
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"])
    p.add_argument("--max_len", type=int, default=None, help="window length (default: the model's max_len)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--add_eos", choices=["auto", "yes", "no"], default="auto",
                   help="score an EOS after each chorale (auto: yes for 'chorale', no for 'jsb16th')")
    p.add_argument("--device", default="cpu")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also write the model as a pretrained directory with these metrics in its card")
    p.add_argument("--card_notes", default="", help="markdown appended to the exported model card "
                   "(data, training command, caveats)")
    return p


def model_card(name: str, model: nn.Module, results: dict[str, dict[str, float]], window: int, data: str,
               notes: str) -> str:
    """A model card: what the model is, its config, the measured NLL table and the given notes."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows = "\n".join(
        f"| {split} | {r['nll']:.4f} | {r['ppl']:.3f} | {r['acc']:.3f} | {r['tokens']} |" for split, r in results.items()
    )
    return f"""# {name}

Music Transformer (Huang et al. 2018, arXiv 1809.04281): a decoder-only Transformer with relative
self-attention (per-head learned embeddings of the clipped distance, max distance {cfg.max_distance}),
{cfg.num_layers} layers, d_model {cfg.d_model}, {cfg.num_heads} heads, feed-forward {cfg.d_ff},
{params / 1e6:.2f} M parameters, vocabulary `{cfg.tokenizer}` ({cfg.vocab_size} tokens,
`zoo.music.lm.tokenizers`).

## Results

NLL in nats per token, every token of every piece scored once in windows of {window} tokens;
data: {data}.

| split | NLL (nats/token) | perplexity | next-token accuracy | tokens |
|---|---|---|---|---|
{rows}

{notes.strip()}

## Use

```python
import zoo
model = zoo.load_pretrained("{name}")
```

```bash
python -m zoo.music.generate --checkpoint checkpoints/{name} --out chorale.mid --temperature 0.9 --top_k 20
python -m zoo.music.lm.evaluate --checkpoint checkpoints/{name}
```
"""


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = build_parser().parse_args(argv)
    loaded = load_model_and_tokenizer(args.checkpoint, device=args.device)
    max_len = args.max_len or int(loaded.model.config.max_len)
    add_eos = None if args.add_eos == "auto" else args.add_eos == "yes"
    dm = make_datamodule(loaded.tokenizer.kind, args.data_path, max_len, args.batch_size, add_eos=add_eos)
    results = evaluate_splits(loaded.model, dm, args.splits, device=args.device)
    print(f"{loaded.name}  data={args.data_path or 'default'}  window={max_len}")
    print(f"{'split':<6} {'NLL (nats/token)':>17} {'ppl':>8} {'acc':>7} {'tokens':>9}")
    for split, r in results.items():
        print(f"{split:<6} {r['nll']:>17.4f} {r['ppl']:>8.3f} {r['acc']:>7.3f} {r['tokens']:>9d}")
    if args.export:
        from zoo.hub import save_pretrained

        config = loaded.model.config
        data = args.data_path or ("generated MIDI folder" if loaded.tokenizer.kind == "performance"
                                  else "music21's Bach chorales, fixed split (zoo.music.lm.data)")
        card = model_card(loaded.name, loaded.model, results, max_len, data, args.card_notes)
        metrics = {f"{split}_{k}": v for split, r in results.items() for k, v in r.items()}
        out = save_pretrained(loaded.model, args.export, name=loaded.name, config=config, card=card,
                              metadata={"metrics": metrics, "eval_window": max_len, "data": data})
        print(f"exported {out}")
    return results


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # bad arguments or files: one line naming them, no traceback
        raise SystemExit(f"python -m zoo.music.lm.evaluate: error: {err}") from None
