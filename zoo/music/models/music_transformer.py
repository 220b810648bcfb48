"""Music Transformer (Huang et al. 2018, "Music Transformer: Generating Music with Long-Term Structure",
arXiv 1809.04281): a decoder-only Transformer whose self-attention adds a learned relative-position
term ``q_i . E[clip(j - i, -K, 0)]`` (per head, ``K`` = ``max_distance``), computed by the core's
``RelativeEmbedding`` (with the paper's skewing trick on the reference path).

What differs from the paper, on purpose:

* attention width equals the model width (the core's ``MultiheadAttention`` projects to ``dim``);
* pre-LayerNorm blocks and a final LayerNorm (tensor2tensor's default pre-processing), ReLU MLP,
  input embedding scaled by ``sqrt(d_model)`` and tied to the output projection;
* no absolute position signal at all: relative attention alone carries order, so the model is
  length-agnostic and the same weights decode past the training context.

Incremental decoding keeps one :class:`~zoo.core_attention.KVCache` per layer; the relative term
reads positions that continue from the cached length, so cached logits equal full recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core_attention import KVCache, MultiheadAttention, positions
from zoo.hub import register_model

__all__ = ["MusicTransformerConfig", "MusicTransformer", "CONFIGS", "sample_next"]


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MusicTransformerConfig:
    """One Music Transformer variant.

    ``tokenizer`` names the vocabulary the model was built for (``chorale``, ``jsb16th``,
    ``performance``; see :mod:`zoo.music.tokenizers`) and fixes ``vocab_size`` by convention.
    ``max_len`` is the training context; generation may run longer (relative attention clips).
    """

    vocab_size: int = 133
    tokenizer: str = "chorale"
    num_layers: int = 5
    d_model: int = 512
    num_heads: int = 8
    d_ff: int = 512
    max_distance: int = 256
    max_len: int = 1024
    dropout: float = 0.1
    attn_dropout: float = 0.1
    per_head_relative: bool = True
    tie_embeddings: bool = True
    backend: str = "auto"


CONFIGS: dict[str, MusicTransformerConfig] = {
    # Huang et al. 2018, Table 1 (JSB Chorales, Music Transformer row): 5 layers, hidden 512,
    # attention 512, feed-forward 512, relative distance 256, 8 heads; paper representation.
    "jsb": MusicTransformerConfig(
        vocab_size=132, tokenizer="jsb16th", num_layers=5, d_model=512, num_heads=8, d_ff=512,
        max_distance=256, max_len=1024,
    ),
    # Huang et al. 2018, Piano-e-Competition / MAESTRO on Oore et al. performance events: the
    # configuration of Magenta's released score2perf Music Transformer (tensor2tensor transformer_base:
    # 6 layers, hidden 512, feed-forward 2048, 8 heads) with relative attention, maximum relative
    # distance 1024 and 2048-event training targets.
    "piano": MusicTransformerConfig(
        vocab_size=391, tokenizer="performance", num_layers=6, d_model=512, num_heads=8, d_ff=2048,
        max_distance=1024, max_len=2048,
    ),
    # The shipped chorale checkpoint: the JSB architecture scaled to what CPU training affords,
    # on the hold-token chorale vocabulary.
    "chorales": MusicTransformerConfig(
        vocab_size=133, tokenizer="chorale", num_layers=4, d_model=192, num_heads=6, d_ff=512,
        max_distance=256, max_len=512, dropout=0.1, attn_dropout=0.0,
    ),
    # `make demo`: trains in a few minutes on 2 CPU cores.
    "demo": MusicTransformerConfig(
        vocab_size=133, tokenizer="chorale", num_layers=3, d_model=128, num_heads=4, d_ff=384,
        max_distance=128, max_len=256, dropout=0.1, attn_dropout=0.0,
    ),
}


# ---------------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------------
class DecoderBlock(nn.Module):
    """Pre-LN block: relative causal self-attention, then a ReLU MLP; both residual."""

    def __init__(self, cfg: MusicTransformerConfig) -> None:
        super().__init__()
        head_dim = cfg.d_model // cfg.num_heads
        rel = positions.RelativeEmbedding(
            head_dim, cfg.max_distance, num_heads=cfg.num_heads if cfg.per_head_relative else None, causal=True
        )
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = MultiheadAttention(
            cfg.d_model, cfg.num_heads, position=rel, dropout=cfg.attn_dropout, backend=cfg.backend
        )
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_ff, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), causal=True, cache=cache))  # (B, L, D)
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, L, D)


# ---------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------
class MusicTransformer(nn.Module):
    """Decoder-only Music Transformer: ``forward(tokens (B, L), cache=None) -> logits (B, L, V)``."""

    def __init__(self, config: MusicTransformerConfig) -> None:
        super().__init__()
        if config.d_model % config.num_heads:
            raise ValueError(f"d_model ({config.d_model}) must be divisible by num_heads ({config.num_heads})")
        if config.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {config.vocab_size}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=m.embedding_dim**-0.5)

    def new_cache(self) -> list[KVCache]:
        """One empty KV cache per layer, for :meth:`forward` ``cache=``."""
        return [KVCache() for _ in self.blocks]

    def forward(self, tokens: Tensor, cache: Sequence[KVCache] | None = None) -> Tensor:
        """``tokens (B, L)`` int -> logits ``(B, L, V)``.

        With ``cache`` (from :meth:`new_cache`), ``tokens`` are the *new* tokens following the cached
        ones; the caches grow in place.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"cache must hold one KVCache per layer ({len(self.blocks)}), got {len(cache)}")
        x = self.drop(self.embed(tokens) * math.sqrt(self.config.d_model))  # (B, L, D)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if cache is None else cache[i])  # (B, L, D)
        return self.head(self.norm(x))  # (B, L, V)

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` after ``prompt (B, L0)``; returns ``(B, L0 + n)``.

        ``use_cache=False`` recomputes the whole prefix each step (the reference for the cache and
        the benchmark's baseline). Generation stops early when every row has produced ``eos_id``.
        """
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must have shape (B, L0 >= 1), got {tuple(prompt.shape)}")
        was_training = self.training
        self.eval()
        out = prompt
        cache = self.new_cache() if use_cache else None
        finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        step_input = prompt
        for _ in range(max_new_tokens):
            logits = self(step_input if use_cache else out, cache=cache)[:, -1]  # (B, V)
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            if eos_id is not None:
                nxt = torch.where(finished, torch.full_like(nxt, eos_id), nxt)
                finished |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)  # (B, L + 1)
            step_input = nxt[:, None]  # (B, 1)
            if eos_id is not None and bool(finished.all()):
                break
        self.train(was_training)
        return out


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from ``logits (B, V)`` with temperature, top-k and nucleus (top-p) filtering.

    ``temperature == 0`` is greedy.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (keeps at least one)
        drop = probs.cumsum(-1) - probs >= top_p  # (B, V)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ---------------------------------------------------------------------------------------------------
# entrypoints
# ---------------------------------------------------------------------------------------------------
_TEST_OVERRIDES = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_distance=16, dropout=0.0, attn_dropout=0.0)


def _test_input(model: nn.Module) -> tuple[tuple, dict]:
    return (torch.randint(0, model.config.vocab_size, (2, 12)),), {}


def _build(variant: str, overrides: dict) -> MusicTransformer:
    return MusicTransformer(replace(CONFIGS[variant], **overrides))


@register_model(
    "music_transformer_chorales", config=CONFIGS["chorales"],
    description="Music Transformer on Bach chorales (music21), SATB 16th grid with hold tokens; shipped checkpoint",
    test_overrides=_TEST_OVERRIDES, test_input=_test_input,
)
def music_transformer_chorales(**overrides) -> MusicTransformer:
    return _build("chorales", overrides)


@register_model(
    "music_transformer_jsb", config=CONFIGS["jsb"],
    description="Music Transformer, the paper's JSB Chorales config (Huang et al. 2018, Table 1)",
    test_overrides=_TEST_OVERRIDES, test_input=_test_input,
)
def music_transformer_jsb(**overrides) -> MusicTransformer:
    return _build("jsb", overrides)


@register_model(
    "music_transformer_piano", config=CONFIGS["piano"],
    description="Music Transformer, the paper's piano (performance events) config (Huang et al. 2018)",
    test_overrides=_TEST_OVERRIDES, test_input=_test_input,
)
def music_transformer_piano(**overrides) -> MusicTransformer:
    return _build("piano", overrides)


@register_model(
    "music_transformer_demo", config=CONFIGS["demo"],
    description="Small Music Transformer for `make demo` (chorales, trains in minutes on CPU)",
    test_overrides=_TEST_OVERRIDES, test_input=_test_input,
)
def music_transformer_demo(**overrides) -> MusicTransformer:
    return _build("demo", overrides)
