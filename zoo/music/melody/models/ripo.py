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

* Pre-norm blocks with a final LayerNorm by default (``norm_layout="pre"``); ``"post"`` gives
  post-norm layers, and ``"official"`` the official network exactly (:func:`convert_official`):
  post-norm layers whose attention reads ``norm1(x)`` -- ``norm1(x + attn(norm1(x)))``, an artefact
  of editing PyTorch's post-norm layer -- FME frequencies one per sin / cos component, and every
  layer's relative FMS tied to the token FMEs. On the folk melodies pre- and post-norm train alike.
* Attention runs on the core with ``backend="sdpa"`` by default: the pitch / onset terms enter as
  extra q/k feature columns (exact, O(L) memory) instead of the official (B, L, L, d) tensors;
  ``attention_backend="reference"`` gives the materialized form.
* Outside ``"official"``, each layer's relative terms own their FMS frequencies, one per sin / cos
  pair (the paper's formula; see ``positions/music.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.core_attention import MultiheadAttention
from zoo.core_attention.positions import RelativeEmbedding
from zoo.core_attention.positions.music import DURATION_BASE, PITCH_BASE, FundamentalMusicEmbedding, MusicRelative
from zoo.hub import register_family
from zoo.training.sampling import check_sampling, sample_next

__all__ = ["RIPOConfig", "RIPOTransformer", "CONFIGS", "convert_official", "PAD", "REST", "SUSTAIN", "PITCH_OFFSET"]

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
    attention_backend: str = "sdpa"  # runtime only: never saved (zoo.hub.config)
    # "pre": pre-norm blocks + final LayerNorm (ours); "post": post-norm layers; "official": the official
    # RIPO network exactly -- post-norm layers whose attention also reads norm1(x), FME frequencies one
    # per sin / cos component, and every layer's relative FMS tied to the token FMEs
    norm_layout: str = "pre"

    def __post_init__(self) -> None:
        if self.embedding not in ("fme", "learned"):
            raise ValueError(f"RIPOConfig.embedding must be 'fme' or 'learned', got {self.embedding!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"RIPOConfig: dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.dim % 2:
            raise ValueError(f"RIPOConfig: dim must be even for the sinusoidal embeddings, got {self.dim}")
        if self.pitch_vocab <= PITCH_OFFSET or self.duration_vocab < 2:
            raise ValueError("RIPOConfig: pitch_vocab must exceed 3 and duration_vocab must be >= 2")
        if self.norm_layout not in ("pre", "post", "official"):
            raise ValueError(f"RIPOConfig.norm_layout must be 'pre', 'post' or 'official', got {self.norm_layout!r}")
        if self.norm_layout == "official" and self.embedding == "fme" and self.relative_dim not in (None, self.dim):
            raise ValueError("RIPOConfig: norm_layout='official' ties the relative FMS to the token FME: relative_dim must be None")

    @property
    def official(self) -> bool:
        return self.norm_layout == "official"


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
    """Decoder block whose attention carries the configured relative terms.

    ``pre``: ``x + attn(norm1(x))``, then ``x + ff(norm2(x))``. ``post``: ``norm1(x + attn(x))``
    (``official``: ``norm1(x + attn(norm1(x)))``), then ``norm2(x + ff(x))``. ``shared_fms``: the
    token FMEs whose frequencies the official layers' relative terms read.
    """

    def __init__(self, cfg: RIPOConfig, shared_fms: dict[str, FundamentalMusicEmbedding] | None = None) -> None:
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
                    per_component_frequencies=cfg.official, shared_fms=shared_fms,
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

        self.norm_first = cfg.norm_layout == "pre"
        self.attention_input_norm = cfg.official

    def forward(self, x: Tensor, mask: Tensor, context: dict[str, Tensor]) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), mask=mask, causal=True, position_context=context))
            return x + self.drop(self.ff(self.norm2(x)))  # (B, L, dim)
        a = self.norm1(x) if self.attention_input_norm else x  # (B, L, dim)
        x = self.norm1(x + self.drop(self.attn(a, mask=mask, causal=True, position_context=context)))
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
            self.pitch_fme = FundamentalMusicEmbedding(cfg.dim, cfg.pitch_base, per_component=cfg.official)
            self.pitch_special = nn.Embedding(PITCH_OFFSET, cfg.dim)  # pad, rest, sustain
            self.duration_fme = FundamentalMusicEmbedding(cfg.dim, cfg.duration_base, per_component=cfg.official)
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
        shared = None
        if cfg.official and cfg.embedding == "fme":
            # the official relative terms read the token FMEs' frequencies (pitch; onset from duration)
            shared = {"pitch": self.pitch_fme, "onset": self.duration_fme}
        self.blocks = nn.ModuleList(RIPOBlock(cfg, shared) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim) if cfg.norm_layout == "pre" else nn.Identity()
        self.pitch_head = nn.Linear(cfg.dim, cfg.pitch_vocab)
        self.duration_head = nn.Linear(cfg.dim, cfg.duration_vocab)
        for head in (self.pitch_head, self.duration_head):
            nn.init.uniform_(head.weight, -0.1, 0.1)
            nn.init.zeros_(head.bias)

    def no_weight_decay(self) -> set[str]:
        """Token embeddings and every parameter of the attention position terms (their projections
        included) take no weight decay: the recipe the shipped ``ripo_folk`` checkpoint was trained with."""
        return {
            n for n, _ in self.named_parameters()
            if n.startswith(("pitch_embedding", "duration_embedding", "pitch_special", "duration_special")) or ".position." in n
        }

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
        check_sampling(temperature, top_k, top_p)
        was_training = self.training
        self.eval()
        for _ in range(steps):
            pl, dl = self(pitch, duration)  # (B, L, Vp), (B, L, Vd)
            picks = [
                sample_next(logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, forbid=(PAD,),
                            generator=generator)[:, None]  # (B, 1)
                for logits in (pl, dl)
            ]
            pitch = torch.cat([pitch, picks[0]], 1)
            duration = torch.cat([duration, picks[1]], 1)
        self.train(was_training)
        return pitch, duration


# ----------------------------------------------------------------------------------------- variants
CONFIGS: dict[str, RIPOConfig] = {
    # the official configs: d_model 256, 8 heads, FF 2048, dropout 0.2, 2 layers
    "ripo_transformer": RIPOConfig(),
    "ripo_music_transformer_baseline": RIPOConfig(
        embedding="learned", relative_pitch=False, relative_onset=False, onset_encoding=False
    ),
    "ripo_vanilla_baseline": RIPOConfig(
        embedding="learned", relative_index=False, relative_pitch=False, relative_onset=False, onset_encoding=False
    ),
    # CPU-sized RIPO of configs/music/melody/ripo_folk.yaml; its weights ship in checkpoints/ripo_folk/
    "ripo_folk": RIPOConfig(dim=128, num_heads=4, ff_dim=512, depth=2, dropout=0.1, max_len=128),
}


# ----------------------------------------------------------------------------------------- official-weight conversion
# The official model is ``RIPO_transformer`` in model/model.py of guozixunnicolas/FundamentalMusicEmbedding;
# its ``best_loss.pth`` is a plain ``model.state_dict()``. What it fixes outside its state dict:
_OFFICIAL_PE_ROWS = 5000  # rows of ``Music_PositionalEncoding.pe``
_OFFICIAL_DURATION_STEP = 0.25  # ``tokenizer_plain.duration_dict_inv``: token t -> t / 4 quarter notes
_OFFICIAL_BAR = 4.0  # ``dur_onset_cumsum % 4``
_OFFICIAL_PE_ATOL = 1e-5  # ``pe`` is a constant table we recompute; allow libm's last-bit differences only


def _official_layout(cfg: RIPOConfig) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Keys and shapes of the official ``RIPO_transformer(...).state_dict()`` matching ``cfg``, and the
    keys that may be absent (built but never read there; dropped here)."""
    d, ff = cfg.dim, cfg.ff_dim
    shapes: dict[str, tuple[int, ...]] = {"pos_encoder.pe": (_OFFICIAL_PE_ROWS, 1, d)}
    optional: set[str] = set()

    def linear(name: str, n_out: int, n_in: int, *, may_be_absent: bool = False) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)
        if may_be_absent:
            optional.update((f"{name}.weight", f"{name}.bias"))

    for i in range(cfg.depth):
        p = f"transformer_encoder.layers.{i}."
        if cfg.relative_index:
            shapes[p + "self_attn.E"] = (cfg.max_len + 1, d // cfg.num_heads)  # row max_seq - 1 + r: distance r <= 0
        for name in ("Wq", "Wk", "Wv", "fc"):
            linear(p + "self_attn." + name, d, d)
        # every RIPO attention builds both; with learned embeddings the model feeds them nothing
        # (pitch_rel_enc = None), and the "mha" / "rgl_vanilla" attentions do not build them
        for name in ("pitch_relnn", "dur_relnn"):
            linear(p + "self_attn." + name, d, d, may_be_absent=cfg.embedding == "learned")
        linear(p + "linear1", ff, d)
        linear(p + "linear2", d, ff)
        for name in ("norm1", "norm2"):
            shapes[p + name + ".weight"] = shapes[p + name + ".bias"] = (d,)
    linear("fusion_layer.fusion", d, 2 * d)
    if cfg.embedding == "fme":
        for attr, specials in (("pitch", PITCH_OFFSET), ("dur", 1)):
            shapes[f"{attr}_embedding.translation_bias"] = shapes[f"{attr}_embedding.angles"] = (1, d)
            shapes[f"{attr}_embedding_supplement.weight"] = (specials, d)
            linear(f"{attr}_senn", d, d)
        shapes["relative_pitch_embedding_supplement.weight"] = (1, d)
    else:
        shapes["pitch_embedding.weight"] = (cfg.pitch_vocab, d)
        shapes["dur_embedding.weight"] = (cfg.duration_vocab, d)
    linear("pitch_ffn", cfg.pitch_vocab, d)
    linear("dur_ffn", cfg.duration_vocab, d)
    return shapes, optional


def _check_official_config(cfg: RIPOConfig) -> None:
    """Raise unless ``cfg`` computes what an official checkpoint computes (see :func:`convert_official`)."""
    problems = []
    if cfg.norm_layout != "official":
        problems.append(
            f"norm_layout={cfg.norm_layout!r} (the official network is norm_layout='official': post-norm layers that "
            "compute norm1(x + attn(norm1(x))), FME frequencies one per component, relative FMS tied to the token FMEs)"
        )
    if cfg.relative_dim not in (None, cfg.dim):
        problems.append(f"relative_dim={cfg.relative_dim} (the official FMS has d_model entries: use None)")
    if cfg.embedding == "fme" and not (cfg.relative_pitch and cfg.relative_onset and cfg.onset_encoding):
        # the state dict does not record attention_conf / position_encoding_conf; these are the published ones
        problems.append(
            "an FME checkpoint converts to relative_pitch=relative_onset=onset_encoding=True only (the published "
            "ripo_transformer.yaml; its state dict does not record attention_conf or position_encoding_conf)"
        )
    if cfg.embedding == "learned" and (cfg.relative_pitch or cfg.relative_onset):
        problems.append("relative_pitch / relative_onset with learned embeddings (the official one has no such input)")
    if cfg.embedding == "learned" and cfg.onset_encoding:
        problems.append("onset_encoding=True with learned embeddings (the published baseline has no onset timing)")
    if (cfg.onset_encoding or cfg.relative_onset) and cfg.duration_step != _OFFICIAL_DURATION_STEP:
        problems.append(f"duration_step={cfg.duration_step} (official onsets count token t as t / 4 quarter notes)")
    if cfg.onset_encoding and cfg.bar_length != _OFFICIAL_BAR:
        problems.append(f"bar_length={cfg.bar_length} (the official modulo timing is onset % 4)")
    if problems:
        raise ValueError("convert_official: the model config cannot hold the official network: " + "; ".join(problems))


def _fold(outer: str, inner: str, sd: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``outer(inner(x))`` of two official Linears as one, in float64: ``W2 W1`` and ``W2 b1 + b2``."""
    w2, b2 = sd[f"{outer}.weight"].double(), sd[f"{outer}.bias"].double()
    w1, b1 = sd[f"{inner}.weight"].double(), sd[f"{inner}.bias"].double()
    return w2 @ w1, w2 @ b1 + b2  # (d, d), (d,)


def convert_official(state_dict: dict[str, Tensor], model: RIPOTransformer) -> dict[str, Tensor]:
    """Map an official RIPO transformer state dict onto ``model``'s keys, exactly, or raise ``ValueError``.

    ``state_dict`` is the official ``RIPO_transformer.state_dict()`` (already unwrapped, no
    ``module.`` prefix); the result loads with ``model.load_state_dict(out, strict=True)``.

    Official layout (``d`` = d_model, ``L`` = layer; FME checkpoint unless marked)::

        pos_encoder.pe                                      (5000, 1, d) fixed index sinusoid
        transformer_encoder.layers.L.self_attn.E            (246, d/H)   row 245 + r: distance r <= 0
        transformer_encoder.layers.L.self_attn.{Wq,Wk,Wv,fc}.{weight,bias}   (d, d), (d,)
        transformer_encoder.layers.L.self_attn.{pitch,dur}_relnn.{weight,bias} (d, d), (d,)  per layer
        transformer_encoder.layers.L.{linear1,linear2}.{weight,bias}  (FF, d), (FF,) / (d, FF), (d,)
        transformer_encoder.layers.L.{norm1,norm2}.{weight,bias}      (d,)
        fusion_layer.fusion.{weight,bias}                   (d, 2d), (d,)
        {pitch,dur}_embedding.angles                        (1, d)   one frequency per component
        {pitch,dur}_embedding.translation_bias              (1, d)
        pitch_embedding_supplement.weight                   (3, d)   pad / rest / sustain
        dur_embedding_supplement.weight                     (1, d)   pad
        relative_pitch_embedding_supplement.weight          (1, d)   shared non-quantifiable relative vector
        {pitch,dur}_senn.{weight,bias}                      (d, d), (d,)  shared rel. Linear
        pitch_ffn.{weight,bias}, dur_ffn.{weight,bias}      (128, d), (17, d) heads
        learned baselines: {pitch,dur}_embedding.weight (128, d), (17, d) instead of the FME keys;
        "mha" / "rgl_vanilla" attentions lack the *_relnn keys, "mha" also E.

    What it does per key: renames the heads, fusion, norms, q/k/v/out and feed-forward Linears and
    the special-token tables; ``angles (1, d)`` -> ``frequencies (d,)`` (one per component, as there)
    and ``translation_bias (1, d)`` -> ``bias (d,)``; the relative terms read those same token FMEs
    (``norm_layout="official"`` ties them; official onset differences are in quarter notes, like
    ours); folds ``{pitch,dur}_relnn . {pitch,dur}_senn``
    into ``proj.{pitch,onset}`` (``W = W2 W1``, ``b = W2 b1 + b2``, float64); maps the shared
    non-quantifiable vector ``e`` into each layer's head space, ``nonquant.pitch = W2 (W1 e + b1) + b2``;
    copies ``E`` as ``position.<i>.weight`` (identical row order when ``max_len = rows - 1``); sets the
    fixed timing frequencies to the official float32 ``1 / 10001 ** (2 (i // 2) / d)``; checks ``pe``
    against :func:`sinusoidal_index` and drops it; drops the unused ``*_relnn`` of the baselines.

    The model config must be (:func:`_check_official_config`): ``norm_layout="official"``
    (every official layer computes ``norm1(x + attn(norm1(x)))``),
    ``max_len=245`` (246 ``E`` rows), ``pitch_vocab=128``, ``duration_vocab=17``, ``relative_dim=None``,
    ``duration_step=0.25``, ``bar_length=4``, and for an FME checkpoint ``embedding="fme"`` with
    ``relative_index``, ``relative_pitch``, ``relative_onset``, ``onset_encoding`` on; for the
    baselines ``embedding="learned"``, no pitch / onset terms or onset encoding, ``relative_index``
    as ``E`` is present. I.e. an official RIPO checkpoint is
    ``RIPOConfig(pitch_vocab=128, max_len=245, norm_layout="official")`` (the
    other defaults are the official RIPO sizes): ``zoo.load_official("ripo_transformer", "best_loss.pth",
    pitch_vocab=128, max_len=245, norm_layout="official")``, and the baselines
    the same overrides of ``"ripo_music_transformer_baseline"`` / ``"ripo_vanilla_baseline"``.
    ``dropout``, ``attention_backend`` and the FME bases (initial values only) are free. The state
    dict records neither ``attention_conf`` nor ``position_encoding_conf``: the settings above are
    those of the published yamls; the head count is checked only through ``E``.

    The converted model computes the official network: on the published config with random
    weights, float32 logits agree with a float64 re-implementation of the official forward to
    2.4e-6 (the same weights without the inner ``norm1``: 3.1), at every non-pad position of
    end-padded melodies. Pad *query* positions differ and are never compared: the official onset
    term sees ``FMS(0)`` for pairs touching a pad (ours the true onset difference), and its
    ``key_padding_mask[:, None, :, None]`` masks pad query rows instead of pad keys (ours masks pad
    keys; the same for non-pad queries when the padding is at the end, as the official data has it).

    Refusals (``ValueError``, naming the keys or options): a config other than the above; missing /
    unexpected keys and wrong shapes; a ``pe`` that is not the index sinusoid. Trained checkpoints,
    whose sin and cos frequencies drifted apart, convert exactly (``"official"`` keeps ``d`` frequencies
    per FME; ``MusicRelative.qk_features`` then uses twice the key columns).
    """
    cfg = model.config
    _check_official_config(cfg)
    sd = dict(state_dict)
    shapes, optional = _official_layout(cfg)
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    missing = sorted(k for k in shapes if k not in sd and k not in optional)
    unexpected = sorted(k for k in sd if k not in shapes)
    wrong = [
        f"{k}: expected {shapes[k]}, got {tuple(sd[k].shape)}"
        for k in shapes
        if k in sd and k not in bad and tuple(sd[k].shape) != shapes[k]
    ]
    if bad or missing or unexpected or wrong:
        hints = []
        if any(k.startswith("module.") for k in sd):
            hints.append("strip the DDP 'module.' prefix first")
        if cfg.embedding == "fme" and "pitch_embedding.weight" in sd:
            hints.append("the checkpoint has learned embeddings: use embedding='learned'")
        if cfg.embedding == "learned" and "pitch_embedding.angles" in sd:
            hints.append("the checkpoint has FME embeddings: use embedding='fme'")
        if any(k.endswith("self_attn.E") for k in sd) != cfg.relative_index:
            hints.append("relative_index must match the presence of self_attn.E")
        parts = [f"not tensors: {bad}"] if bad else []
        parts += [f"missing keys: {missing}"] if missing else []
        parts += [f"unexpected keys: {unexpected}"] if unexpected else []
        parts += [f"wrong shapes: {wrong}"] if wrong else []
        parts += [f"hint: {'; '.join(hints)}"] if hints else []
        raise ValueError(
            f"convert_official: the state dict is not the official layout for config dim={cfg.dim}, depth={cfg.depth}, "
            f"heads={cfg.num_heads}, ff_dim={cfg.ff_dim}, max_len={cfg.max_len}, pitch_vocab={cfg.pitch_vocab}, "
            f"duration_vocab={cfg.duration_vocab}: " + "; ".join(parts)
        )

    pe = sd["pos_encoder.pe"][:, 0].double()  # (5000, d)
    pe_gap = (pe - sinusoidal_index(_OFFICIAL_PE_ROWS, cfg.dim, pe.device).double()).abs().max().item()
    if pe_gap > _OFFICIAL_PE_ATOL:
        raise ValueError(
            f"convert_official: pos_encoder.pe is not the index sinusoid our model computes (max |difference| "
            f"{pe_gap:.3g} > {_OFFICIAL_PE_ATOL}); an edited index encoding has no place in RIPOTransformer"
        )
    out: dict[str, Tensor] = {}
    if cfg.embedding == "fme":
        freq = {a: sd[f"{a}_embedding.angles"][0] for a in ("pitch", "dur")}  # (d,) one per component
        out["pitch_fme.frequencies"] = freq["pitch"]
        out["pitch_fme.bias"] = sd["pitch_embedding.translation_bias"][0]
        out["pitch_special.weight"] = sd["pitch_embedding_supplement.weight"]
        out["duration_fme.frequencies"] = freq["dur"]
        out["duration_fme.bias"] = sd["dur_embedding.translation_bias"][0]
        out["duration_special.weight"] = sd["dur_embedding_supplement.weight"]
    else:
        out["pitch_embedding.weight"] = sd["pitch_embedding.weight"]
        out["duration_embedding.weight"] = sd["dur_embedding.weight"]
    if cfg.onset_encoding:
        # the official Music_PositionalEncoding keeps these as plain attributes (not in its state dict)
        i = torch.arange(cfg.dim)
        timing = (1 / torch.pow(TIMING_BASE, (2 * (i // 2)) / cfg.dim))[0::2]  # (d/2,) float32, as there
        out["global_onset.frequencies"] = out["modulo_onset.frequencies"] = timing
    out["fusion.weight"] = sd["fusion_layer.fusion.weight"]
    out["fusion.bias"] = sd["fusion_layer.fusion.bias"]

    renames = {"norm1": "norm1", "norm2": "norm2", "linear1": "ff.0", "linear2": "ff.3"}
    renames |= {"self_attn.Wq": "attn.q_proj", "self_attn.Wk": "attn.k_proj", "self_attn.Wv": "attn.v_proj"}
    renames |= {"self_attn.fc": "attn.out_proj"}
    for i, block in enumerate(model.blocks):
        src, dst = f"transformer_encoder.layers.{i}.", f"blocks.{i}."
        for theirs, ours in renames.items():
            for param in ("weight", "bias"):
                out[f"{dst}{ours}.{param}"] = sd[f"{src}{theirs}.{param}"]
        for j, term in enumerate(block.attn.position):
            term_key = f"{dst}attn.position.{j}."
            if isinstance(term, RelativeEmbedding):
                out[term_key + "weight"] = sd[src + "self_attn.E"]
            elif isinstance(term, MusicRelative):
                for attr, theirs in (("pitch", "pitch"), ("onset", "dur")):
                    w, b = _fold(f"{src}self_attn.{theirs}_relnn", f"{theirs}_senn", sd)  # (H*D, d), (H*D,)
                    out[f"{term_key}proj.{attr}.weight"], out[f"{term_key}proj.{attr}.bias"] = w, b
                    if attr == "pitch":
                        e = sd["relative_pitch_embedding_supplement.weight"][0].double()  # (d,)
                        out[term_key + "nonquant.pitch"] = w @ e + b  # (H*D,) = relnn(senn(e))
    for theirs, ours in (("pitch_ffn", "pitch_head"), ("dur_ffn", "duration_head")):
        out[f"{ours}.weight"], out[f"{ours}.bias"] = sd[f"{theirs}.weight"], sd[f"{theirs}.bias"]

    target = model.state_dict()
    if out.keys() != target.keys() or any(out[k].shape != target[k].shape for k in out):
        raise RuntimeError(
            "convert_official is out of date with RIPOTransformer: "
            f"unmapped {sorted(target.keys() - out.keys())}, extra {sorted(out.keys() - target.keys())}, "
            f"shapes {[k for k in out.keys() & target.keys() if out[k].shape != target[k].shape]}"
        )
    return {k: v.detach().to(dtype=target[k].dtype).clone() for k, v in out.items()}


# ----------------------------------------------------------------------------------------- entrypoints
def _test_input(model: RIPOTransformer) -> tuple[tuple[Tensor, Tensor], dict]:
    g = torch.Generator().manual_seed(0)
    pitch = torch.randint(PITCH_OFFSET + 55, PITCH_OFFSET + 80, (2, 12), generator=g)
    pitch[0, 3] = REST
    pitch[1, -2:] = PAD
    duration = torch.randint(1, model.config.duration_vocab, (2, 12), generator=g)
    duration[1, -2:] = PAD
    return (pitch, duration), {}


def _tokenizer(model: RIPOTransformer) -> Any:
    from ..tokenizer import MelodyMidiTokenizer

    return MelodyMidiTokenizer.for_model(model)


def _sample(model: RIPOTransformer, tokenizer: Any, primer: list[int], options: Any) -> list[int]:
    """``python -m zoo.music.generate``: continue the primer (flat ``[p0, d0, p1, d1, ...]``) by ``options.length`` notes."""
    from ..tokenizer import DEFAULT_PRIMER

    if list(primer) == [tokenizer.bos_id]:
        primer = list(DEFAULT_PRIMER)
    device = next(model.parameters()).device
    pairs = torch.tensor(primer, dtype=torch.long, device=device).view(-1, 2)  # (L0, 2)
    gen = torch.Generator(device=device).manual_seed(options.seed)
    pitch, duration = model.generate(
        pairs[None, :, 0], pairs[None, :, 1], options.length, temperature=options.temperature, top_k=options.top_k,
        top_p=options.top_p, generator=gen,
    )
    return torch.stack([pitch[0], duration[0]], -1).flatten().tolist()


register_family(
    CONFIGS,
    RIPOTransformer,
    description={
        "ripo_transformer": "RIPO transformer: FME + relative index/pitch/onset attention (Guo et al. 2023)",
        "ripo_folk": "RIPO transformer, CPU-sized, trained on music21's folk melodies (checkpoints/ripo_folk)",
        "ripo_music_transformer_baseline": "Music Transformer on (pitch, duration) tokens: the RIPO paper's baseline",
        "ripo_vanilla_baseline": "Vanilla transformer on (pitch, duration) tokens: the RIPO paper's baseline",
    },
    test_overrides=dict(dim=32, depth=1, num_heads=2, ff_dim=64, max_len=32, dropout=0.0),
    test_input=_test_input,
    tokenizer=_tokenizer,
    sampler=_sample,
    official=convert_official,
)
