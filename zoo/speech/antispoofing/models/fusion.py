"""SSL + spectral fusion for speech deepfake detection.

El Kheir, Das, Erdogan, Ritter-Gutierrez, Polzehl, Möller, "Two Views, One Truth: Spectral and
Self-Supervised Features Fusion for Robust Speech Deepfake Detection", arXiv 2507.20417 (2025). No public
code. SSL frames of the waveform are fused with hand-crafted cepstra (MFCC, LFCC or CQCC) by one of
four strategies, then pooled to one bona fide score per utterance:

- ``concat``: ``W [h_ssl ; h_spec]`` (the spectral frames aligned to the SSL frame rate);
- ``cross_attention``: the SSL frames query the spectral frames (a pre-norm transformer cross-attention
  block, residual on the SSL stream);
- ``mutual_cross_attention``: both directions (SSL -> spectral and spectral -> SSL), the spectral-side
  result aligned to the SSL frames, combined by ``W [a ; b]``;
- ``gated``: a learned per-dimension gate ``g = sigmoid(W [h_ssl ; h_spec] + b)``, ``h = g h_ssl + (1 - g) h_spec``;

plus the two baselines, ``ssl_only`` and ``spectral_only`` (the other branch is not built).

What the paper leaves open and what we chose (also in ``docs/speech/antispoofing.md``):

- The SSL model: torchaudio's wav2vec 2.0 / XLS-R / WavLM architectures; the registered variants use
  the XLS-R 300M sizes (24 layers, width 1024), the usual SSL front end of anti-spoofing systems
  (Tak et al. 2022); ``ssl_arch="wavlm"`` switches to WavLM. The SSL model's own self-attention is
  torchaudio's (its layers must stay torchaudio's so that Hugging Face / fairseq checkpoints load
  through torchaudio's key rules); every attention this family adds (fusion, pooling) goes through
  :mod:`zoo.core_attention`.
- Layer: a learned softmax-weighted sum of every transformer layer (``ssl_layer=None``, SUPERB style)
  by default; ``ssl_layer=k`` takes layer ``k`` and drops the layers above it.
- Widths: both views are projected to ``d_model=128`` (the SSL-AASIST projection width); one fusion
  block; 4 heads; feed-forward ratio 2.
- Frame rates: SSL frames are 20 ms, spectral frames 10 ms; ``concat``, ``gated`` and the spectral side
  of ``mutual_cross_attention`` align the spectral sequence to the SSL frames by linear interpolation;
  cross-attention needs no alignment. No position terms inside the fusion attention: both streams carry
  local order already (the SSL convolutional position embedding, the spectral convolutions).
- Several spectral features at once (``spectral=("mfcc", "lfcc")``): one encoder each, outputs summed.
- Back end: attentive statistics pooling (a learned query attends over the fused frames through
  :func:`zoo.core_attention.attention`; weighted mean and standard deviation), then an MLP to one
  logit, the bona fide score (higher = more likely bona fide). The paper's back end is not specified
  in the parts we could read; a pooled MLP keeps the comparison about the fusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zoo.core_attention import attention
from zoo.core_attention.mha import MultiheadAttention

from ..features import (
    SPECTRAL_FEATURES,
    SpectralEncoder,
    SpectralFrontEnd,
    SSLFrontEnd,
    align_frames,
    build_ssl,
    convert_ssl_state_dict,
)

__all__ = ["FUSIONS", "FusionConfig", "FusionDetector", "FUSION_CONFIGS", "convert_official"]

FUSIONS = ("concat", "cross_attention", "mutual_cross_attention", "gated", "ssl_only", "spectral_only")


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FusionConfig:
    """One detector: the SSL front end, the spectral front ends, the fusion and the back end."""

    fusion: str = "cross_attention"
    # SSL branch (torchaudio wav2vec2_model / wavlm_model); defaults: XLS-R 300M
    ssl_arch: str = "wav2vec2"
    ssl_conv_dim: int = 512
    ssl_embed_dim: int = 1024
    ssl_layers: int = 24
    ssl_heads: int = 16
    ssl_ff_dim: int = 4096
    ssl_extractor_mode: str = "layer_norm"
    ssl_conv_bias: bool = True
    ssl_layer_norm_first: bool = True
    ssl_pos_conv_kernel: int = 128
    ssl_pos_conv_groups: int = 16
    ssl_dropout: float = 0.0
    ssl_layer: int | None = None  # None: learned weighted sum of every layer
    freeze_ssl: bool = False
    normalize_waveform: bool = True
    # spectral branch
    spectral: tuple[str, ...] = ("lfcc",)
    n_coeffs: int = 20
    cqcc_bins_per_octave: int = 24
    # fusion and back end
    d_model: int = 128
    fusion_heads: int = 4
    fusion_layers: int = 1
    ffn_ratio: float = 2.0
    dropout: float = 0.1
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"FusionConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion != "ssl_only":
            if not self.spectral:
                raise ValueError(f"FusionConfig.spectral: fusion {self.fusion!r} needs at least one of {SPECTRAL_FEATURES}")
            bad = [s for s in self.spectral if s not in SPECTRAL_FEATURES]
            if bad or len(set(self.spectral)) != len(self.spectral):
                raise ValueError(f"FusionConfig.spectral must be distinct names from {SPECTRAL_FEATURES}, got {self.spectral}")
        if self.ssl_arch not in ("wav2vec2", "wavlm"):
            raise ValueError(f"FusionConfig.ssl_arch must be 'wav2vec2' or 'wavlm', got {self.ssl_arch!r}")
        if self.ssl_extractor_mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"FusionConfig.ssl_extractor_mode must be 'group_norm' or 'layer_norm', got {self.ssl_extractor_mode!r}")
        if self.ssl_embed_dim % self.ssl_heads or self.ssl_embed_dim % self.ssl_pos_conv_groups:
            raise ValueError(
                f"FusionConfig: ssl_embed_dim {self.ssl_embed_dim} must be divisible by ssl_heads {self.ssl_heads} "
                f"and ssl_pos_conv_groups {self.ssl_pos_conv_groups}"
            )
        if self.ssl_layer is not None and not 1 <= self.ssl_layer <= self.ssl_layers:
            raise ValueError(f"FusionConfig.ssl_layer must be None or in [1, {self.ssl_layers}], got {self.ssl_layer}")
        if self.d_model % self.fusion_heads:
            raise ValueError(f"FusionConfig: d_model {self.d_model} is not divisible by fusion_heads {self.fusion_heads}")
        if min(self.ssl_conv_dim, self.ssl_layers, self.n_coeffs, self.d_model, self.fusion_layers) < 1:
            raise ValueError("FusionConfig: sizes (ssl_conv_dim, ssl_layers, n_coeffs, d_model, fusion_layers) must be >= 1")
        if not (0 <= self.dropout < 1 and 0 <= self.ssl_dropout < 1):
            raise ValueError(f"FusionConfig: dropouts must be in [0, 1), got {self.dropout}, {self.ssl_dropout}")

    @property
    def uses_ssl(self) -> bool:
        return self.fusion != "spectral_only"

    @property
    def uses_spectral(self) -> bool:
        return self.fusion != "ssl_only"


# ----------------------------------------------------------------------------------------------- blocks
class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float) -> None:
        hidden = max(1, int(dim * ratio))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention: ``x + MHA(LN x, LN context)``, then ``+ FFN(LN x)``; ``x`` sets the length."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float, backend: str) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads, dropout=dropout, backend=backend)
        self.ff = FeedForward(dim, ffn_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm_q(x), self.norm_kv(context)))  # (B, Lq, D)
        return x + self.drop(self.ff(self.norm_ff(x)))  # (B, Lq, D)


class CrossAttentionStack(nn.Module):
    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(cfg.d_model, cfg.fusion_heads, cfg.ffn_ratio, cfg.dropout, cfg.attention_backend)
            for _ in range(cfg.fusion_layers)
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, context)  # (B, Lq, D)
        return x


class Fusion(nn.Module):
    """Two streams ``ssl (B, Ls, D)`` and ``spec (B, Lf, D)`` -> one fused sequence ``(B, L, D)``."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.kind = cfg.fusion
        d = cfg.d_model
        if self.kind in ("concat", "gated"):
            self.proj = nn.Linear(2 * d, d)
        elif self.kind == "cross_attention":
            self.ssl_to_spec = CrossAttentionStack(cfg)
        elif self.kind == "mutual_cross_attention":
            self.ssl_to_spec = CrossAttentionStack(cfg)
            self.spec_to_ssl = CrossAttentionStack(cfg)
            self.proj = nn.Linear(2 * d, d)

    def forward(self, ssl: Tensor | None, spec: Tensor | None) -> Tensor:
        if self.kind == "ssl_only":
            return ssl
        if self.kind == "spectral_only":
            return spec
        if self.kind == "cross_attention":
            return self.ssl_to_spec(ssl, spec)  # (B, Ls, D): SSL frames query the spectral frames
        if self.kind == "mutual_cross_attention":
            a = self.ssl_to_spec(ssl, spec)  # (B, Ls, D)
            b = align_frames(self.spec_to_ssl(spec, ssl), ssl.shape[1])  # (B, Ls, D)
            return self.proj(torch.cat([a, b], dim=-1))  # (B, Ls, D)
        spec = align_frames(spec, ssl.shape[1])  # (B, Ls, D)
        both = torch.cat([ssl, spec], dim=-1)  # (B, Ls, 2D)
        if self.kind == "concat":
            return self.proj(both)  # (B, Ls, D)
        gate = torch.sigmoid(self.proj(both))  # (B, Ls, D), per dimension
        return gate * ssl + (1 - gate) * spec  # (B, Ls, D)


class AttentiveStatsPooling(nn.Module):
    """``(B, L, D)`` -> ``(B, 2D)``: a learned query per head attends over the frames (through
    :func:`zoo.core_attention.attention`); the weighted mean and standard deviation are concatenated."""

    def __init__(self, dim: int, heads: int, backend: str) -> None:
        super().__init__()
        self.heads, self.head_dim, self.backend = heads, dim // heads, backend
        self.query = nn.Parameter(torch.randn(1, heads, 1, dim // heads) * dim**-0.5)
        self.key = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, length, d = x.shape
        k = self.key(torch.tanh(x)).view(b, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        v = x.view(b, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        vv = torch.cat([v, v * v], dim=-1)  # (B, H, L, 2Dh): one softmax gives both moments
        q = self.query.expand(b, -1, -1, -1).to(x.dtype)  # (B, H, 1, Dh)
        moments = attention(q, k, vv, backend=self.backend)  # (B, H, 1, 2Dh)
        mean, second = moments.squeeze(2).split(self.head_dim, dim=-1)  # (B, H, Dh) each
        std = (second - mean * mean).clamp_min(1e-6).sqrt()  # (B, H, Dh)
        return torch.cat([mean.flatten(1), std.flatten(1)], dim=-1)  # (B, 2D)


# ------------------------------------------------------------------------------------------------ model
class FusionDetector(nn.Module):
    """Waveform ``(B, T)`` at 16 kHz -> bona fide score ``(B,)`` (a logit; higher = more likely bona fide)."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        self.ssl: SSLFrontEnd | None = None
        if cfg.uses_ssl:
            model = build_ssl(
                cfg.ssl_arch, cfg.ssl_conv_dim, cfg.ssl_embed_dim, cfg.ssl_layers, cfg.ssl_heads, cfg.ssl_ff_dim,
                extractor_mode=cfg.ssl_extractor_mode, conv_bias=cfg.ssl_conv_bias,
                layer_norm_first=cfg.ssl_layer_norm_first, pos_conv_kernel=cfg.ssl_pos_conv_kernel,
                pos_conv_groups=cfg.ssl_pos_conv_groups, dropout=cfg.ssl_dropout,
            )
            self.ssl = SSLFrontEnd(model, cfg.ssl_layer, cfg.freeze_ssl, cfg.normalize_waveform)
            self.ssl_proj = nn.Linear(cfg.ssl_embed_dim, d)
        if cfg.uses_spectral:
            self.spectral = nn.ModuleDict(
                {name: SpectralFrontEnd(name, n_coeffs=cfg.n_coeffs, cqcc_bins_per_octave=cfg.cqcc_bins_per_octave)
                 for name in cfg.spectral}
            )
            self.spectral_encoders = nn.ModuleDict(
                {name: SpectralEncoder(3 * cfg.n_coeffs, d, cfg.dropout) for name in cfg.spectral}
            )
        self.fusion = Fusion(cfg)
        self.norm = nn.LayerNorm(d)
        self.pool = AttentiveStatsPooling(d, cfg.fusion_heads, cfg.attention_backend)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, 1))

    def forward_ssl(self, wave: Tensor) -> Tensor | None:
        if self.ssl is None:
            return None
        return self.ssl_proj(self.ssl(wave))  # (B, Ls, D)

    def forward_spectral(self, wave: Tensor) -> Tensor | None:
        if not self.config.uses_spectral:
            return None
        streams = [self.spectral_encoders[name](self.spectral[name](wave)) for name in self.config.spectral]  # (B, Lf, D) each
        length = streams[0].shape[1]
        return torch.stack([align_frames(s, length) for s in streams]).sum(0)  # (B, Lf, D)

    def forward_features(self, wave: Tensor) -> Tensor:
        """The fused frame sequence ``(B, L, D)``."""
        if wave.dim() != 2:
            raise ValueError(f"FusionDetector expects a batch of waveforms (B, T), got shape {tuple(wave.shape)}")
        return self.norm(self.fusion(self.forward_ssl(wave), self.forward_spectral(wave)))  # (B, L, D)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(self.pool(features)).squeeze(-1)  # (B,)

    def forward(self, wave: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(wave))  # (B,)


# --------------------------------------------------------------------------------------------- variants
#: the paper's four fusions and its SSL-only baseline (XLS-R 300M sizes, LFCC), plus a spectral-only one
FUSION_CONFIGS: dict[str, FusionConfig] = {
    "antispoof_fusion_concat": FusionConfig(fusion="concat"),
    "antispoof_fusion_cross_attention": FusionConfig(fusion="cross_attention"),
    "antispoof_fusion_mutual_cross_attention": FusionConfig(fusion="mutual_cross_attention"),
    "antispoof_fusion_gated": FusionConfig(fusion="gated"),
    "antispoof_ssl_only": FusionConfig(fusion="ssl_only"),
    "antispoof_spectral_only": FusionConfig(fusion="spectral_only"),
}


# ---------------------------------------------------------------------------------- official conversion
def convert_official(state_dict: dict[str, Any], model: FusionDetector) -> dict[str, Any]:
    """A Hugging Face / fairseq wav2vec 2.0, XLS-R or WavLM checkpoint -> this detector's state dict.

    The checkpoint initializes the SSL branch only (there is no official detector checkpoint: the paper
    has no public code); the spectral encoders, fusion and back end keep the model's own freshly
    initialized tensors, named explicitly here. Every SSL key must then match in name and shape
    (``zoo.load_official``'s strict filter lists any difference, e.g. a checkpoint of another width).
    """
    if model.ssl is None:
        raise ValueError(f"{model.config.fusion!r} has no SSL branch to load an SSL checkpoint into")
    converted = {f"ssl.model.{k}": v for k, v in convert_ssl_state_dict(state_dict, model.ssl).items()}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("ssl.model.")}
    return {**converted, **own}
