"""RIPO transformer (Guo, Kang & Herremans, AAAI 2023, arXiv 2212.00973) and its baselines.

A decoder over monophonic melodies tokenized as (pitch, duration) pairs (see
:mod:`zoo.music.melody`): pitch 0 = pad, 1 = rest, 2 = sustain, ``3 + MIDI``; duration 0 = pad,
``t`` = ``t * duration_step`` quarter notes. Two heads predict the next pitch and the next
duration (melody completion).

* **RIPO**: pitch and duration enter through the Fundamental Music Embedding (learned
  embeddings for the non-quantifiable pad / rest / sustain), are fused by a Linear, and get an
  index + global-onset + onset-modulo-bar encoding; attention adds the relative *index* term of
  the Music Transformer (:class:`~zoo.core_attention.positions.RelativeEmbedding`) and the
  relative *pitch* and *onset* terms (:class:`~zoo.core_attention.positions.music.MusicRelative`).
* **Music Transformer baseline**: the same network with learned token embeddings, index encoding
  and only the relative index term (the paper's "music transformer" on the same tokens).
* **Vanilla baseline**: learned embeddings, index encoding, plain attention.

Differences from the official code, and why:

* Pre-norm blocks with a final LayerNorm by default; ``norm_first=False`` gives post-norm layers
  like the official ones (which also apply ``norm1`` before attention, an artefact of editing
  PyTorch's post-norm layer; not reproduced). On the folk melodies both train alike.
* Attention runs on the core with ``backend="sdpa"`` by default: the pitch / onset terms enter as
  extra q/k feature columns (exact, O(L) memory) instead of the official (B, L, L, d) tensors;
  ``attention_backend="reference"`` gives the materialized form.
* Each layer's relative terms own their FMS frequencies (see ``positions/music.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core_attention import MultiheadAttention
from zoo.core_attention.positions import RelativeEmbedding
from zoo.core_attention.positions.music import DURATION_BASE, PITCH_BASE, FundamentalMusicEmbedding, MusicRelative
from zoo.hub import register_model

__all__ = ["RIPOConfig", "RIPOTransformer", "CONFIGS", "PAD", "REST", "SUSTAIN", "PITCH_OFFSET"]

#: token ids shared with :mod:`zoo.music.melody`
PAD, REST, SUSTAIN = 0, 1, 2
PITCH_OFFSET = 3  # pitch token = MIDI number + 3
TIMING_BASE = 10001.0  # official base of the (fixed) global / modulo onset encodings


# ----------------------------------------------------------------------------------------- config
@dataclass
class RIPOConfig:
    """One variant. ``embedding``: ``"fme"`` (RIPO) or ``"learned"`` (baselines)."""

    pitch_vocab: int = 131  # pad, rest, sustain, MIDI 0..127
    duration_vocab: int = 17  # pad, 1..16 steps
    duration_step: float = 0.25  # quarter notes per duration token step
    dim: int = 256
    depth: int = 2
    num_heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.2
    max_len: int = 256  # clip distance of the relative index term
    embedding: str = "fme"
    relative_index: bool = True
    relative_pitch: bool = True
    relative_onset: bool = True
    onset_encoding: bool = True  # global onset + onset modulo bar (FME, fixed), as the official RIPO
    bar_length: float = 4.0  # quarter notes per bar for the modulo encoding
    relative_dim: int | None = None  # FMS size of the relative terms; None = dim (the paper)
    pitch_base: float = PITCH_BASE
    duration_base: float = DURATION_BASE
    attention_backend: str = "sdpa"
    norm_first: bool = True  # pre-norm blocks + final LayerNorm; False = the official post-norm layers

    def __post_init__(self) -> None:
        if self.embedding not in ("fme", "learned"):
            raise ValueError(f"RIPOConfig.embedding must be 'fme' or 'learned', got {self.embedding!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"RIPOConfig: dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.dim % 2:
            raise ValueError(f"RIPOConfig: dim must be even for the sinusoidal embeddings, got {self.dim}")
        if self.pitch_vocab <= PITCH_OFFSET or self.duration_vocab < 2:
            raise ValueError("RIPOConfig: pitch_vocab must exceed 3 and duration_vocab must be >= 2")


# ----------------------------------------------------------------------------------------- blocks
def sinusoidal_index(length: int, dim: int, device: torch.device) -> Tensor:
    """Transformer index encoding ``(L, dim)``."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (L, 1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class RIPOBlock(nn.Module):
    """Pre-norm decoder block whose attention carries the configured relative terms."""

    def __init__(self, cfg: RIPOConfig) -> None:
        super().__init__()
        head_dim = cfg.dim // cfg.num_heads
        terms: list[nn.Module] = []
        if cfg.relative_index:
            terms.append(RelativeEmbedding(head_dim, cfg.max_len, num_heads=None, causal=True))
        if cfg.relative_pitch or cfg.relative_onset:
            terms.append(
                MusicRelative(
                    head_dim, cfg.num_heads, cfg.relative_dim or cfg.dim,
                    pitch=cfg.relative_pitch, onset=cfg.relative_onset,
                    pitch_base=cfg.pitch_base, onset_base=cfg.duration_base,
                )
            )
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = MultiheadAttention(
            cfg.dim, cfg.num_heads, position=terms, dropout=cfg.dropout, backend=cfg.attention_backend
        )
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ff = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ff_dim), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff_dim, cfg.dim)
        )
        self.drop = nn.Dropout(cfg.dropout)

        self.norm_first = cfg.norm_first

    def forward(self, x: Tensor, mask: Tensor, context: dict[str, Tensor]) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), mask=mask, causal=True, position_context=context))
            return x + self.drop(self.ff(self.norm2(x)))  # (B, L, dim)
        x = self.norm1(x + self.drop(self.attn(x, mask=mask, causal=True, position_context=context)))
        return self.norm2(x + self.drop(self.ff(x)))  # (B, L, dim)


# ----------------------------------------------------------------------------------------- model
class RIPOTransformer(nn.Module):
    """``forward(pitch (B, L), duration (B, L)) -> (pitch_logits (B, L, Vp), duration_logits (B, L, Vd))``.

    Position ``i`` predicts token ``i + 1``. Onsets are the exclusive cumulative sum of the
    durations (pad durations count 0); pass ``onset`` to override them.
    """

    def __init__(self, config: RIPOConfig) -> None:
        super().__init__()
        self.config = cfg = config
        if cfg.embedding == "fme":
            self.pitch_fme = FundamentalMusicEmbedding(cfg.dim, cfg.pitch_base)
            self.pitch_special = nn.Embedding(PITCH_OFFSET, cfg.dim)  # pad, rest, sustain
            self.duration_fme = FundamentalMusicEmbedding(cfg.dim, cfg.duration_base)
            self.duration_special = nn.Embedding(1, cfg.dim)  # pad
            for emb in (self.pitch_special, self.duration_special):
                nn.init.uniform_(emb.weight, -0.1, 0.1)
        else:
            self.pitch_embedding = nn.Embedding(cfg.pitch_vocab, cfg.dim)
            self.duration_embedding = nn.Embedding(cfg.duration_vocab, cfg.dim)
            for emb in (self.pitch_embedding, self.duration_embedding):
                nn.init.uniform_(emb.weight, -0.1, 0.1)
        if cfg.onset_encoding:
            self.global_onset = FundamentalMusicEmbedding(cfg.dim, TIMING_BASE, trainable_frequencies=False, bias=False)
            self.modulo_onset = FundamentalMusicEmbedding(cfg.dim, TIMING_BASE, trainable_frequencies=False, bias=False)
        self.fusion = nn.Linear(2 * cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(RIPOBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm_first else nn.Identity()
        self.pitch_head = nn.Linear(cfg.dim, cfg.pitch_vocab)
        self.duration_head = nn.Linear(cfg.dim, cfg.duration_vocab)
        for head in (self.pitch_head, self.duration_head):
            nn.init.uniform_(head.weight, -0.1, 0.1)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------------ inputs
    def onsets(self, duration: Tensor) -> Tensor:
        """Exclusive cumulative onsets ``(B, L)`` in quarter notes."""
        q = duration.to(torch.float32) * self.config.duration_step  # (B, L)
        return torch.cumsum(q, -1) - q

    def _check(self, pitch: Tensor, duration: Tensor) -> None:
        cfg = self.config
        if pitch.dim() != 2 or pitch.shape != duration.shape:
            raise ValueError(
                f"RIPOTransformer expects pitch and duration of equal shape (B, L), got {tuple(pitch.shape)} "
                f"and {tuple(duration.shape)}"
            )
        if pitch.dtype not in (torch.int64, torch.int32) or duration.dtype not in (torch.int64, torch.int32):
            raise ValueError("RIPOTransformer expects integer pitch and duration tokens")
        if pitch.numel() and (int(pitch.min()) < 0 or int(pitch.max()) >= cfg.pitch_vocab):
            raise ValueError(f"pitch tokens must lie in [0, {cfg.pitch_vocab}), got [{int(pitch.min())}, {int(pitch.max())}]")
        if duration.numel() and (int(duration.min()) < 0 or int(duration.max()) >= cfg.duration_vocab):
            raise ValueError(
                f"duration tokens must lie in [0, {cfg.duration_vocab}), got [{int(duration.min())}, {int(duration.max())}]"
            )

    def embed(self, pitch: Tensor, duration: Tensor, onset: Tensor) -> Tensor:
        cfg = self.config
        if cfg.embedding == "fme":
            special = pitch < PITCH_OFFSET  # (B, L)
            p = torch.where(special[..., None], self.pitch_special(pitch.clamp(max=PITCH_OFFSET - 1)), self.pitch_fme(pitch))
            d_pad = duration == PAD
            d = torch.where(d_pad[..., None], self.duration_special(torch.zeros_like(duration)), self.duration_fme(duration))
        else:
            p, d = self.pitch_embedding(pitch), self.duration_embedding(duration)  # (B, L, dim) each
        x = self.fusion(torch.cat([p, d], -1)) * math.sqrt(cfg.dim)  # (B, L, dim)
        x = x + sinusoidal_index(pitch.shape[1], cfg.dim, pitch.device)
        if cfg.onset_encoding:
            x = x + self.global_onset(onset) + self.modulo_onset(torch.remainder(onset, cfg.bar_length))
        return self.drop(x)

    # ------------------------------------------------------------------------------ forward
    def forward_features(self, pitch: Tensor, duration: Tensor, onset: Tensor | None = None) -> Tensor:
        self._check(pitch, duration)
        onset = self.onsets(duration) if onset is None else onset.to(torch.float32)
        x = self.embed(pitch, duration, onset)  # (B, L, dim)
        context = {"pitch": pitch.to(torch.float32), "onset": onset, "nonquant": pitch < PITCH_OFFSET}
        mask = (pitch != PAD)[:, None, None, :]  # (B, 1, 1, L) padded keys never attended
        for block in self.blocks:
            x = block(x, mask, context)
        return self.norm(x)  # (B, L, dim)

    def forward(self, pitch: Tensor, duration: Tensor, onset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.forward_features(pitch, duration, onset)
        return self.pitch_head(h), self.duration_head(h)  # (B, L, Vp), (B, L, Vd)

    # ------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self,
        pitch: Tensor,
        duration: Tensor,
        steps: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Continue the primers ``pitch, duration (B, Lp)`` (no padding) by ``steps`` tokens.

        Recomputes the whole prefix each step: melodies are short, and every relative term
        (pitch, onset, index) stays exact without a cache. Pad is never sampled.
        """
        if pitch.dim() == 1:
            pitch, duration = pitch[None], duration[None]
        if pitch.shape[1] < 1:
            raise ValueError("generate needs a primer of at least one token")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        was_training = self.training
        self.eval()
        for _ in range(steps):
            pl, dl = self(pitch, duration)
            picks = []
            for logits in (pl[:, -1], dl[:, -1]):
                logits = logits.float() / temperature  # (B, V)
                logits[:, PAD] = float("-inf")
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                if top_p is not None:
                    # nucleus: drop the tail whose cumulative probability beyond the top tokens exceeds top_p
                    srt, idx = logits.sort(-1, descending=True)
                    cum = F.softmax(srt, -1).cumsum(-1)
                    drop = cum - F.softmax(srt, -1) > top_p  # (B, V) keep the token that crosses top_p
                    logits = logits.scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
                picks.append(torch.multinomial(F.softmax(logits, -1), 1, generator=generator))  # (B, 1)
            pitch = torch.cat([pitch, picks[0]], 1)
            duration = torch.cat([duration, picks[1]], 1)
        self.train(was_training)
        return pitch, duration


# ----------------------------------------------------------------------------------------- variants
CONFIGS: dict[str, RIPOConfig] = {
    # the official configs: d_model 256, 8 heads, FF 2048, dropout 0.2, 2 layers
    "ripo": RIPOConfig(),
    "music_transformer": RIPOConfig(
        embedding="learned", relative_pitch=False, relative_onset=False, onset_encoding=False
    ),
    "vanilla": RIPOConfig(
        embedding="learned", relative_index=False, relative_pitch=False, relative_onset=False, onset_encoding=False
    ),
    # CPU-sized RIPO of configs/music/ripo_folk.yaml; its weights ship in checkpoints/ripo_folk/
    "folk": RIPOConfig(dim=128, num_heads=4, ff_dim=512, depth=2, dropout=0.1, max_len=128),
}


def _test_input(model: RIPOTransformer) -> tuple[tuple[Tensor, Tensor], dict]:
    g = torch.Generator().manual_seed(0)
    pitch = torch.randint(PITCH_OFFSET + 55, PITCH_OFFSET + 80, (2, 12), generator=g)
    pitch[0, 3] = REST
    pitch[1, -2:] = PAD
    duration = torch.randint(1, model.config.duration_vocab, (2, 12), generator=g)
    duration[1, -2:] = PAD
    return (pitch, duration), {}


_TINY = dict(dim=32, depth=1, num_heads=2, ff_dim=64, max_len=32, dropout=0.0)


def _build(variant: str, overrides: dict) -> RIPOTransformer:
    return RIPOTransformer(replace(CONFIGS[variant], **overrides))


@register_model(
    "ripo_transformer", config=CONFIGS["ripo"],
    description="RIPO transformer: FME + relative index/pitch/onset attention (Guo et al. 2023)",
    test_overrides=_TINY, test_input=_test_input,
)
def ripo_transformer(**overrides) -> RIPOTransformer:
    return _build("ripo", overrides)


@register_model(
    "ripo_folk", config=CONFIGS["folk"],
    description="RIPO transformer, CPU-sized, trained on music21's folk melodies (checkpoints/ripo_folk)",
    test_overrides=_TINY, test_input=_test_input,
)
def ripo_folk(**overrides) -> RIPOTransformer:
    return _build("folk", overrides)


@register_model(
    "ripo_music_transformer_baseline", config=CONFIGS["music_transformer"],
    description="Music Transformer on (pitch, duration) tokens: the RIPO paper's baseline",
    test_overrides=_TINY, test_input=_test_input,
)
def ripo_music_transformer_baseline(**overrides) -> RIPOTransformer:
    return _build("music_transformer", overrides)


@register_model(
    "ripo_vanilla_baseline", config=CONFIGS["vanilla"],
    description="Vanilla transformer on (pitch, duration) tokens: the RIPO paper's baseline",
    test_overrides=_TINY, test_input=_test_input,
)
def ripo_vanilla_baseline(**overrides) -> RIPOTransformer:
    return _build("vanilla", overrides)
