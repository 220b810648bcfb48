"""Music Transformer (Huang et al. 2018, "Music Transformer: Generating Music with Long-Term Structure",
arXiv 1809.04281): a decoder-only Transformer whose self-attention adds a learned relative-position
term ``q_i . E[clip(j - i, -K, 0)]`` (per head, ``K`` = ``max_distance``), computed by the core's
``RelativeEmbedding`` (with the paper's skewing trick on the reference path).

What differs from the paper, on purpose:

* attention width equals the model width (the core's ``MultiheadAttention`` projects to ``dim``);
* pre-LayerNorm blocks and a final LayerNorm (tensor2tensor's default pre-processing), ReLU MLP,
  input embedding scaled by ``sqrt(d_model)`` and tied to the output projection;
* no absolute position signal at all: relative attention alone carries order, so the model is
  length-agnostic and the same weights decode past the training context;
* optionally (``num_voices``, the chorale variants) a learned *voice* embedding: tokens interleave
  S, A, T, B per time step, and relative attention alone cannot tell whose turn it is (the phase of
  position modulo 4 is lost), so sampled voices drift into each other's tracks. Each input at absolute
  position ``p`` (BOS at 0) adds ``voice[p mod num_voices]``, the voice of the token it predicts.
  Windows pass their absolute ``start``; with a KV cache the cached length gives it;
* optionally (``steps_per_bar``, with ``num_voices``) a learned *metric* embedding of the time step
  within the bar, ``(p // num_voices) mod steps_per_bar``, counted from the piece's first step: with
  hold tokens, whether a chord should change depends on where in the bar it is, which relative
  attention over a run of identical HOLD tokens cannot see. Pieces that start with a pickup shift
  this phase (the grid does not record the first bar's offset).

Incremental decoding keeps one :class:`~zoo.core_attention.KVCache` per layer; the relative term
reads positions that continue from the cached length, so cached logits equal full recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.core_attention import KVCache, MultiheadAttention, positions
from zoo.hub import register_family
from zoo.training.sampling import check_sampling, sample_next

__all__ = ["MusicTransformerConfig", "MusicTransformer", "CONFIGS", "sample_next"]


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MusicTransformerConfig:
    """One Music Transformer variant.

    ``tokenizer`` names the vocabulary the model was built for (``chorale``, ``jsb16th``,
    ``performance``; see :mod:`zoo.music.lm.tokenizers`) and fixes ``vocab_size`` by convention.
    ``max_len`` is the training context; generation predicts each token from at most that many previous
    tokens by default (``generate(context=)``), since beyond it sampled chorales freeze.
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
    num_voices: int = 0  # > 0: a learned embedding of the voice whose token each position predicts
    steps_per_bar: int = 0  # > 0 (needs num_voices): a learned embedding of that token's step within the bar
    attention_backend: str = "auto"  # runtime only: never saved (zoo.hub.config)

    def __post_init__(self) -> None:
        if min(self.num_layers, self.d_model, self.num_heads, self.d_ff, self.max_distance, self.max_len) < 1:
            raise ValueError(f"MusicTransformerConfig: sizes must be >= 1, got {self}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.num_voices < 0:
            raise ValueError(f"num_voices must be >= 0 (0 = no voice embedding), got {self.num_voices}")
        if self.steps_per_bar < 0 or (self.steps_per_bar and not self.num_voices):
            raise ValueError(f"steps_per_bar must be >= 0 and needs num_voices > 0, got {self.steps_per_bar} "
                             f"with num_voices {self.num_voices}")


CONFIGS: dict[str, MusicTransformerConfig] = {
    # Huang et al. 2018, Table 1 (JSB Chorales, Music Transformer row): 5 layers, hidden 512,
    # attention 512, feed-forward 512, relative distance 256, 8 heads; paper representation.
    "music_transformer_jsb": MusicTransformerConfig(
        vocab_size=132, tokenizer="jsb16th", num_layers=5, d_model=512, num_heads=8, d_ff=512,
        max_distance=256, max_len=1024,
    ),
    # Huang et al. 2018, Piano-e-Competition / MAESTRO on Oore et al. performance events: the
    # configuration of Magenta's released score2perf Music Transformer (tensor2tensor transformer_base:
    # 6 layers, hidden 512, feed-forward 2048, 8 heads) with relative attention, maximum relative
    # distance 1024 and 2048-event training targets.
    "music_transformer_piano": MusicTransformerConfig(
        vocab_size=391, tokenizer="performance", num_layers=6, d_model=512, num_heads=8, d_ff=2048,
        max_distance=1024, max_len=2048,
    ),
    # The shipped chorale checkpoint: the JSB architecture scaled to what CPU training affords,
    # on the hold-token chorale vocabulary, with voice and metric embeddings (see the docstring).
    "music_transformer_chorales": MusicTransformerConfig(
        vocab_size=133, tokenizer="chorale", num_layers=4, d_model=192, num_heads=6, d_ff=512,
        max_distance=256, max_len=256, dropout=0.1, attn_dropout=0.0, num_voices=4, steps_per_bar=16,
    ),
    # The shipped JSB checkpoint: the paper's representation and data, a model sized for a <= 60-minute
    # CPU run, with the voice and metric embeddings of the chorale model (see docs/music/lm.md).
    "music_transformer_jsb_cpu": MusicTransformerConfig(
        vocab_size=132, tokenizer="jsb16th", num_layers=4, d_model=256, num_heads=8, d_ff=1024,
        max_distance=256, max_len=512, dropout=0.1, attn_dropout=0.0, num_voices=4, steps_per_bar=16,
    ),
    # `make demo`: trains in a few minutes on 2 CPU cores.
    "music_transformer_demo": MusicTransformerConfig(
        vocab_size=133, tokenizer="chorale", num_layers=3, d_model=128, num_heads=4, d_ff=384,
        max_distance=128, max_len=256, dropout=0.1, attn_dropout=0.0, num_voices=4, steps_per_bar=16,
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
            cfg.d_model, cfg.num_heads, position=rel, dropout=cfg.attn_dropout, backend=cfg.attention_backend
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
        self.voice = nn.Embedding(config.num_voices, config.d_model) if config.num_voices else None
        self.metric = nn.Embedding(config.steps_per_bar, config.d_model) if config.steps_per_bar else None
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

    def no_weight_decay(self) -> set[str]:
        """The token (tied to the output layer), voice and metric embeddings take no weight decay."""
        return {"embed.weight"} | {f"{name}.weight" for name in ("voice", "metric") if getattr(self, name) is not None}

    def new_cache(self) -> list[KVCache]:
        """One empty KV cache per layer, for :meth:`forward` ``cache=``."""
        return [KVCache() for _ in self.blocks]

    def forward(self, tokens: Tensor, cache: Sequence[KVCache] | None = None, start: Tensor | int | None = None) -> Tensor:
        """``tokens (B, L)`` int -> logits ``(B, L, V)``.

        With ``cache`` (from :meth:`new_cache`), ``tokens`` are the *new* tokens following the cached
        ones; the caches grow in place. ``start`` (an int or ``(B,)``) is the absolute position of
        ``tokens[:, 0]`` in its piece (BOS = 0), read only by the voice embedding; default 0, or the
        cached length with a cache.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"cache must hold one KVCache per layer ({len(self.blocks)}), got {len(cache)}")
        x = self.embed(tokens) * math.sqrt(self.config.d_model)  # (B, L, D)
        if self.voice is not None:
            pos = self.positions(tokens, cache, start)  # (B, L) absolute positions
            x = x + self.voice(pos % self.config.num_voices)  # (B, L, D)
            if self.metric is not None:
                x = x + self.metric((pos // self.config.num_voices) % self.config.steps_per_bar)  # (B, L, D)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if cache is None else cache[i])  # (B, L, D)
        return self.head(self.norm(x))  # (B, L, V)

    def positions(self, tokens: Tensor, cache: Sequence[KVCache] | None = None, start: Tensor | int | None = None) -> Tensor:
        """``(B, L)`` absolute positions of ``tokens`` in their piece (BOS = 0)."""
        if start is None:
            start = len(cache[0]) if cache is not None else 0
        start = torch.as_tensor(start, device=tokens.device).reshape(-1, 1)  # (B or 1, 1)
        return (start + torch.arange(tokens.shape[1], device=tokens.device)).expand(tokens.shape[0], -1)  # (B, L)

    def voice_index(self, tokens: Tensor, cache: Sequence[KVCache] | None = None, start: Tensor | int | None = None) -> Tensor:
        """``(B, L)``: the voice (0 .. num_voices - 1) of the token each position predicts."""
        return self.positions(tokens, cache, start) % max(self.config.num_voices, 1)

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
        allowed: Tensor | None = None,
        context: int | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` after ``prompt (B, L0)``; returns ``(B, L0 + n)``.

        ``context`` bounds what each new token is predicted from to the last ``context`` tokens, as
        in training (pass the training window: the model never saw a longer history, and beyond it
        sampled chorales drift into chords held for 5-10 s; see docs/music/lm.md). The window
        starts on the first token of a time step (position ``1 + k * num_voices``), as training
        windows do, so it may be up to ``num_voices - 1`` tokens shorter. Once the sequence is longer
        than ``context``, each step recomputes the window (O(context) per token) instead of using the
        cache. ``None``: the whole sequence (cached).

        ``use_cache=False`` recomputes the whole prefix each step (the reference for the cache and
        the benchmark's baseline). Generation stops early when every row has produced ``eos_id``.
        ``allowed (S, V)`` bool restricts the token at absolute position ``p`` (BOS = 0) to
        ``allowed[(p - 1) % S]``: the tokens valid for the voice whose turn it is in a sequence that
        interleaves ``S`` voices per step (``ChoraleTokenizer.voice_token_mask``).
        """
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must have shape (B, L0 >= 1), got {tuple(prompt.shape)}")
        check_sampling(temperature, top_k, top_p)
        if context is not None and context < 1:
            raise ValueError(f"context must be >= 1 token (or None for the whole sequence), got {context}")
        align = max(self.config.num_voices, 1)
        if allowed is not None:
            if allowed.dim() != 2 or allowed.shape[1] != self.config.vocab_size or not bool(allowed.any(1).all()):
                raise ValueError(
                    f"allowed must be (voices, {self.config.vocab_size}) bool with a token allowed for every voice, "
                    f"got {tuple(allowed.shape)}"
                )
            allowed = allowed.to(device=prompt.device, dtype=torch.bool)
        was_training = self.training
        self.eval()
        out = prompt
        cache = self.new_cache() if use_cache else None
        finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        step_input = prompt
        for _ in range(max_new_tokens):
            length = out.shape[1]
            if context is not None and length > context:
                first = length - context
                first += (1 - first) % align  # the window starts on a time step, as in training
                logits = self(out[:, first:], start=first)[:, -1]  # (B, V)
            else:
                logits = self(step_input if use_cache else out, cache=cache)[:, -1]  # (B, V)
            if allowed is not None:  # the next token sits at absolute position out.shape[1]
                logits = logits.masked_fill(~allowed[(out.shape[1] - 1) % allowed.shape[0]], float("-inf"))
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


# ---------------------------------------------------------------------------------------------------
# entrypoints
# ---------------------------------------------------------------------------------------------------
def _tokenizer(model: MusicTransformer) -> Any:
    from ..tokenizers import tokenizer_from_config

    return tokenizer_from_config({"kind": model.config.tokenizer})


def _sample(model: MusicTransformer, tokenizer: Any, primer: list[int], options: Any) -> list[int]:
    """``python -m zoo.music.generate``: continue ``primer`` by ``options.length`` tokens with the KV cache."""
    device = next(model.parameters()).device
    prompt = torch.tensor([primer], dtype=torch.long, device=device)  # (1, L0)
    gen = torch.Generator(device=device).manual_seed(options.seed)
    constrain = hasattr(tokenizer, "voice_token_mask") and not getattr(options, "free_voices", False)
    context = getattr(options, "context", None)  # None: the training context; 0: the whole sequence
    context = model.config.max_len if context is None else (context or None)
    out = model.generate(
        prompt, options.length, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
        eos_id=tokenizer.eos_id, use_cache=not options.no_cache, generator=gen,
        allowed=torch.from_numpy(tokenizer.voice_token_mask()) if constrain else None, context=context,
    )
    return out[0].tolist()


register_family(
    CONFIGS,
    MusicTransformer,
    description={
        "music_transformer_chorales": "Music Transformer on Bach chorales (music21), SATB 16th grid with hold tokens; "
        "shipped checkpoint",
        "music_transformer_jsb": "Music Transformer, the paper's JSB Chorales config (Huang et al. 2018, Table 1)",
        "music_transformer_jsb_cpu": "Music Transformer on JSB Chorales in the paper's representation, sized for a "
        "60-minute CPU run, with voice and metric embeddings; shipped checkpoint",
        "music_transformer_piano": "Music Transformer, the paper's piano (performance events) config (Huang et al. 2018)",
        "music_transformer_demo": "Small Music Transformer for `make demo` (chorales, trains in minutes on CPU)",
    },
    test_overrides=dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_distance=16, dropout=0.0, attn_dropout=0.0),
    test_input=lambda model: ((torch.randint(0, model.config.vocab_size, (2, 12)),), {}),
    tokenizer=_tokenizer,
    sampler=_sample,
)
