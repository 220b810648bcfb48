"""Music Transformer pieces of ``python -m zoo.music.evaluate``: the datamodule a tokenizer reads and the model card.

    python -m zoo.music.lm.evaluate ...      # the same command as python -m zoo.music.evaluate

The data follow the checkpoint's tokenizer: ``chorale`` / ``jsb16th`` models read chorales
(music21's by default, or a JSB pickle / ``Jsb16thSeparated`` file), ``performance`` models read
MIDI folders (a path, or the generated default).
"""

from __future__ import annotations

from torch import nn

from .data import ChoralesDataModule, PerformanceDataModule

__all__ = ["make_datamodule", "model_card", "main"]


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


def model_card(name: str, model: nn.Module, results: dict[str, dict[str, float]], window: int, data: str,
               notes: str) -> str:
    """A model card: what the model is, its config, the measured NLL table and the given notes."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows = "\n".join(f"| {split} | {r['nll']:.4f} | {r['ppl']:.3f} | {r['acc']:.3f} |" for split, r in results.items())
    return f"""# {name}

Music Transformer (Huang et al. 2018, arXiv 1809.04281): a decoder-only Transformer with relative
self-attention (per-head learned embeddings of the clipped distance, max distance {cfg.max_distance}),
{cfg.num_layers} layers, d_model {cfg.d_model}, {cfg.num_heads} heads, feed-forward {cfg.d_ff},
{params / 1e6:.2f} M parameters, vocabulary `{cfg.tokenizer}` ({cfg.vocab_size} tokens,
`zoo.music.lm.tokenizers`).

## Results

NLL in nats per token, every token of every piece scored once in windows of {window} tokens;
data: {data}.

| split | NLL (nats/token) | perplexity | next-token accuracy |
|---|---|---|---|
{rows}

{notes.strip()}

## Use

```python
import zoo
model = zoo.load_pretrained("{name}")
```

```bash
python -m zoo.music.generate --checkpoint checkpoints/{name} --out chorale.mid --temperature 0.9 --top_k 20 --top_p 0.9
python -m zoo.music.evaluate --checkpoint checkpoints/{name}
```
"""


def main(argv: list[str] | None = None) -> dict:
    """``python -m zoo.music.evaluate`` (kept under this name for existing commands)."""
    from ..evaluate import main as evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # bad arguments or files: one line naming them, no traceback
        raise SystemExit(f"python -m zoo.music.evaluate: error: {err}") from None
