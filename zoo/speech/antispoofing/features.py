"""Front ends of the SSL + spectral anti-spoofing models: the two views of one waveform.

- :class:`SSLFrontEnd`: torchaudio's wav2vec 2.0 / XLS-R (``wav2vec2_model``) or WavLM (``wavlm_model``)
  architecture, built offline with random weights; one chosen transformer layer (the encoder is cut
  after it, so no unused layer is kept) or a learned softmax-weighted sum of all layers (SUPERB style);
  frozen or fine-tuned by config. Weights of a local Hugging Face or fairseq checkpoint are mapped
  onto it by :func:`convert_ssl_state_dict`, which reuses torchaudio's importers' own key rules
  (``import_fairseq._map_key`` and ``import_huggingface.transform_wavlm_encoder_state``).
- :class:`SpectralFrontEnd`: MFCC and LFCC (``torchaudio.transforms``), CQCC (constant-Q transform from
  ``librosa.cqt``, log power, uniform resampling to a linear frequency scale, DCT), each with deltas and
  delta-deltas and utterance-level mean/variance normalization (CMVN).
- :class:`SpectralEncoder`: the small per-feature encoder (two 1-D convolutions over time).

Choices the paper leaves open (also in ``docs/speech/antispoofing.md``):

- Cepstra: 20 coefficients (c0 included) + deltas + delta-deltas = 60 channels per feature, 20 ms
  windows (320 samples), 10 ms hop, 512-point FFT; LFCC uses 20 linear triangular filters and MFCC 40
  mel filters, both with natural-log energies (the ASVspoof 2019 LFCC baseline's front end).
- CQCC: 24 bins per octave over 8 octaves from 31.25 Hz (up to 8 kHz), hop 10 ms, uniform resampling
  with 16 samples in the first octave. The ASVspoof baseline uses 96 bins per octave over 9 octaves;
  with ``librosa.cqt`` that costs about 4.6 s per 2-s utterance on one CPU core, against 0.04 s here,
  so the default is the cheaper resolution and ``cqcc_bins_per_octave`` restores the baseline's.
  The CQT runs in NumPy (librosa) without gradient: the spectral view is a fixed transform.
- CMVN per utterance and coefficient: common practice for cepstra, and it makes the encoders
  indifferent to the absolute level of the recording.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SSLFrontEnd",
    "SpectralFrontEnd",
    "SpectralEncoder",
    "SPECTRAL_FEATURES",
    "build_ssl",
    "cqt_log_power",
    "cqcc",
    "deltas",
    "convert_ssl_state_dict",
]

SAMPLE_RATE = 16_000
#: the wav2vec 2.0 convolutional feature encoder: (channels, kernel, stride) x 7, 320x downsampling (20 ms frames)
_CONV_KERNELS_STRIDES = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
SPECTRAL_FEATURES = ("mfcc", "lfcc", "cqcc")


# ------------------------------------------------------------------------------------------- SSL branch
def build_ssl(
    arch: str,
    conv_dim: int,
    embed_dim: int,
    num_layers: int,
    num_heads: int,
    ff_dim: int,
    *,
    extractor_mode: str,
    conv_bias: bool,
    layer_norm_first: bool,
    pos_conv_kernel: int,
    pos_conv_groups: int,
    dropout: float,
    wavlm_num_buckets: int = 320,
    wavlm_max_distance: int = 800,
) -> nn.Module:
    """torchaudio's ``wav2vec2_model`` (wav2vec 2.0, XLS-R) or ``wavlm_model`` with random weights."""
    import torchaudio.models as tam

    kwargs: dict[str, Any] = dict(
        extractor_mode=extractor_mode,
        extractor_conv_layer_config=[(conv_dim, k, s) for k, s in _CONV_KERNELS_STRIDES],
        extractor_conv_bias=conv_bias,
        encoder_embed_dim=embed_dim,
        encoder_projection_dropout=dropout,
        encoder_pos_conv_kernel=pos_conv_kernel,
        encoder_pos_conv_groups=pos_conv_groups,
        encoder_num_layers=num_layers,
        encoder_num_heads=num_heads,
        encoder_attention_dropout=dropout,
        encoder_ff_interm_features=ff_dim,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=dropout,
        encoder_layer_norm_first=layer_norm_first,
        encoder_layer_drop=0.0,  # every kept layer runs: the layer weights and all parameters see gradients
        aux_num_out=None,
    )
    if arch == "wav2vec2":
        return tam.wav2vec2_model(**kwargs)
    if arch == "wavlm":
        return tam.wavlm_model(**kwargs, encoder_num_buckets=wavlm_num_buckets, encoder_max_distance=wavlm_max_distance)
    raise ValueError(f"ssl_arch must be 'wav2vec2' (wav2vec 2.0 / XLS-R) or 'wavlm', got {arch!r}")


class SSLFrontEnd(nn.Module):
    """Waveform ``(B, T)`` -> SSL frames ``(B, T // 320, embed_dim)`` (about 50 frames a second).

    Args:
        model: a torchaudio ``Wav2Vec2Model`` (from :func:`build_ssl`); its transformer is cut after
            ``layer`` when one layer is chosen.
        layer: the 1-based transformer layer whose output is used, or ``None`` for a learned
            softmax-weighted sum of every layer's output. In pre-norm models (XLS-R, large
            wav2vec 2.0 / WavLM) the last kept layer's output goes through the encoder's final
            LayerNorm, as the full model's output does, so a cut model is a shallower whole one.
        freeze: no gradient into the SSL weights; they also stay in eval mode (no dropout).
        normalize_waveform: zero-mean unit-variance waveform per utterance (what XLS-R and the
            large wav2vec 2.0 / WavLM models were pre-trained on).
    """

    def __init__(self, model: nn.Module, layer: int | None, freeze: bool, normalize_waveform: bool) -> None:
        super().__init__()
        total = len(model.encoder.transformer.layers)
        if layer is not None:
            if not 1 <= layer <= total:
                raise ValueError(f"ssl_layer must be in [1, {total}] (the SSL model's layers) or None, got {layer}")
            model.encoder.transformer.layers = model.encoder.transformer.layers[:layer]  # unused layers dropped
        self.model = model
        self.layer = layer
        self.num_layers = len(model.encoder.transformer.layers)
        self.layer_weights = nn.Parameter(torch.zeros(self.num_layers)) if layer is None else None
        self.freeze = freeze
        self.normalize_waveform = normalize_waveform
        if freeze:
            self.model.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.model.encoder.feature_projection.projection.out_features

    def train(self, mode: bool = True) -> SSLFrontEnd:
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, wave: Tensor) -> Tensor:
        if self.normalize_waveform:
            wave = (wave - wave.mean(-1, keepdim=True)) / (wave.std(-1, keepdim=True) + 1e-5)  # (B, T)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            layers, _ = self.model.extract_features(wave)  # num_layers x (B, L, E)
            transformer = self.model.encoder.transformer
            # pre-norm models (built with encoder_layer_norm_first=True, which torchaudio stores inverted on
            # the Transformer) normalize their last output in forward() but not in extract_features()
            if not transformer.layer_norm_first:
                layers[-1] = transformer.layer_norm(layers[-1])
        if self.layer_weights is None:
            return layers[-1]  # (B, L, E)
        weights = self.layer_weights.softmax(0)  # (num_layers,)
        return torch.einsum("n,nble->ble", weights, torch.stack(layers))  # (B, L, E)


_HF_PRETRAINING_ONLY = re.compile(r"^(masked_spec_embed|quantizer\.|project_q\.|project_hid\.|lm_head\.|dropout_features)")
_FAIRSEQ_DROPPED = re.compile(r"^(mask_emb|quantizer\.|project_q\.|final_proj\.|label_embs_concat|proj\.|aux\.)")


def _hf_to_torchaudio(sd: dict[str, Tensor], is_wavlm: bool) -> dict[str, Tensor]:
    """Hugging Face ``Wav2Vec2Model`` / ``WavLMModel`` keys -> torchaudio ``Wav2Vec2Model`` keys."""
    from torchaudio.models.wav2vec2.utils.import_huggingface import transform_wavlm_encoder_state

    out: dict[str, Tensor] = {}
    encoder: dict[str, Tensor] = {}
    for key, value in sd.items():
        if _HF_PRETRAINING_ONLY.match(key):
            continue
        if key.startswith("feature_extractor."):
            out[key] = value
        elif key.startswith("feature_projection."):
            out["encoder." + key] = value
        elif key.startswith("encoder."):
            encoder[key[len("encoder.") :]] = value
        else:
            raise ValueError(f"unexpected key {key!r} for a Hugging Face wav2vec 2.0 / WavLM checkpoint")
    if is_wavlm:  # torchaudio's own rule: q/k/v projections concatenated into nn.MultiheadAttention's in_proj
        layers = sorted({int(m.group(1)) for k in encoder if (m := re.match(r"layers\.(\d+)\.", k))})
        transform_wavlm_encoder_state(encoder, len(layers))
    out.update({"encoder.transformer." + k: v for k, v in encoder.items()})
    return out


def _fairseq_to_torchaudio(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """fairseq wav2vec 2.0 / XLS-R keys -> torchaudio keys, by torchaudio's importer's own ``_map_key``."""
    from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key

    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = key.removeprefix("w2v_encoder.").removeprefix("w2v_model.")
        if _FAIRSEQ_DROPPED.match(key):
            continue
        mapped = _map_key(key)
        if mapped is not None:
            out[mapped] = value
    return out


def convert_ssl_state_dict(sd: dict[str, Tensor], front_end: SSLFrontEnd) -> dict[str, Tensor]:
    """A Hugging Face or fairseq wav2vec 2.0 / XLS-R / WavLM state dict -> ``front_end.model``'s keys.

    The layout is recognized by its keys (fairseq: ``post_extract_proj`` / ``self_attn``; Hugging Face:
    ``feature_projection``). Pre-training heads (quantizer, projections, CTC head) are dropped by name;
    layers above a chosen ``ssl_layer`` are dropped because the front end does not keep them. Weight-norm
    tensors (``weight_g`` / ``weight_v``) get their ``parametrizations`` names. Anything else unexpected
    is left in, so the strict filter of the hub names it.
    """
    for prefix in ("wav2vec2.", "wavlm.", "module."):
        if sd and all(k.startswith(prefix) or _HF_PRETRAINING_ONLY.match(k) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    if any("post_extract_proj" in k or ".self_attn." in k for k in sd):
        out = _fairseq_to_torchaudio(sd)
    elif any(k.startswith("feature_projection.") for k in sd):
        is_wavlm = any("rel_attn_embed" in k or "gru_rel_pos" in k for k in sd)
        out = _hf_to_torchaudio(sd, is_wavlm)
    else:
        raise ValueError(
            "not a wav2vec 2.0 / XLS-R / WavLM checkpoint: expected fairseq keys (post_extract_proj, "
            f"encoder.layers.N.self_attn.*) or Hugging Face keys (feature_projection.*); got {sorted(sd)[:5]}"
        )
    renamed: dict[str, Tensor] = {}
    for key, value in out.items():
        key = key.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        key = key.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        m = re.match(r"encoder\.transformer\.layers\.(\d+)\.", key)
        if m and int(m.group(1)) >= front_end.num_layers:
            continue  # above the chosen layer: the front end does not keep it
        renamed[key] = value
    return renamed


# -------------------------------------------------------------------------------------- spectral branch
def deltas(x: Tensor, order: int = 2, win: int = 2) -> Tensor:
    """``x (B, C, L)`` with its first ``order`` regression deltas stacked: ``(B, C * (order + 1), L)``."""
    import torchaudio.functional as taf

    out = [x]
    for _ in range(order):
        out.append(taf.compute_deltas(out[-1], win_length=2 * win + 1))  # (B, C, L)
    return torch.cat(out, dim=1)


def cqt_log_power(
    wave: np.ndarray, sample_rate: int, hop: int, fmin: float, bins_per_octave: int, n_octaves: int
) -> np.ndarray:
    """``log(|CQT|^2 + eps)`` of one waveform ``(T,)`` by ``librosa.cqt``: ``(n_bins, frames)``.

    Bin ``k`` is centred on ``fmin * 2 ** (k / bins_per_octave)``.
    """
    import librosa

    with warnings.catch_warnings():
        # the lowest octaves run on a decimated signal shorter than their FFT; librosa pads, and says so
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        spec = librosa.cqt(
            wave.astype(np.float32), sr=sample_rate, hop_length=hop, fmin=fmin,
            n_bins=bins_per_octave * n_octaves, bins_per_octave=bins_per_octave,
        )  # (n_bins, frames), complex
    return np.log(np.abs(spec) ** 2 + 1e-10)


def uniform_resampling_matrix(fmin: float, bins_per_octave: int, n_octaves: int, first_octave_samples: int) -> Tensor:
    """Linear-interpolation matrix ``(n_bins, n_uniform)`` from the geometric CQT bins to a linear
    frequency grid whose spacing puts ``first_octave_samples`` points in the first octave (CQCC)."""
    n_bins = bins_per_octave * n_octaves
    geometric = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)  # (n_bins,) Hz
    step = fmin / first_octave_samples  # the first octave spans [fmin, 2 fmin)
    uniform = np.arange(fmin, geometric[-1] + 1e-9, step)  # (n_uniform,) Hz
    idx = np.clip(np.searchsorted(geometric, uniform, side="right") - 1, 0, n_bins - 2)
    frac = np.clip((uniform - geometric[idx]) / (geometric[idx + 1] - geometric[idx]), 0.0, 1.0)
    matrix = np.zeros((n_bins, len(uniform)), dtype=np.float32)
    cols = np.arange(len(uniform))
    matrix[idx, cols] = 1.0 - frac
    matrix[idx + 1, cols] += frac
    return torch.from_numpy(matrix)


def cqcc(
    wave: Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    hop: int = 160,
    fmin: float = 31.25,
    bins_per_octave: int = 24,
    n_octaves: int = 8,
    first_octave_samples: int = 16,
    n_coeffs: int = 20,
    resample: Tensor | None = None,
) -> Tensor:
    """Constant-Q cepstral coefficients of ``wave (B, T)``: ``(B, n_coeffs, frames)`` (c0 included).

    CQT log power (librosa) -> uniform resampling (linear interpolation onto a linear frequency grid)
    -> orthonormal DCT-II, keeping the first ``n_coeffs``.
    """
    import torchaudio.functional as taf

    if resample is None:
        resample = uniform_resampling_matrix(fmin, bins_per_octave, n_octaves, first_octave_samples)
    logpow = np.stack([
        cqt_log_power(w, sample_rate, hop, fmin, bins_per_octave, n_octaves) for w in wave.detach().cpu().double().numpy()
    ])  # (B, n_bins, frames)
    x = torch.from_numpy(logpow).to(wave.device, torch.float32).transpose(1, 2)  # (B, frames, n_bins)
    x = x @ resample.to(x.device)  # (B, frames, n_uniform)
    dct = taf.create_dct(n_coeffs, x.shape[-1], norm="ortho").to(x.device)  # (n_uniform, n_coeffs)
    return (x @ dct).transpose(1, 2)  # (B, n_coeffs, frames)


class SpectralFrontEnd(nn.Module):
    """Waveform ``(B, T)`` -> one hand-crafted feature with deltas, CMVN'd: ``(B, 3 * n_coeffs, frames)``.

    ``kind`` is ``"mfcc"``, ``"lfcc"`` or ``"cqcc"``; frames every ``hop`` samples (10 ms at 16 kHz).
    """

    def __init__(
        self,
        kind: str,
        n_coeffs: int = 20,
        n_fft: int = 512,
        win_length: int = 320,
        hop: int = 160,
        n_filters: int = 20,
        n_mels: int = 40,
        cqcc_bins_per_octave: int = 24,
        cqcc_octaves: int = 8,
        cqcc_fmin: float = 31.25,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        import torchaudio.transforms as tat

        self.kind, self.n_coeffs, self.hop, self.sample_rate = kind, n_coeffs, hop, sample_rate
        spec = dict(n_fft=n_fft, win_length=win_length, hop_length=hop)
        if kind == "mfcc":
            self.transform = tat.MFCC(sample_rate, n_mfcc=n_coeffs, log_mels=True, melkwargs=dict(**spec, n_mels=n_mels))
        elif kind == "lfcc":
            self.transform = tat.LFCC(sample_rate, n_filter=n_filters, n_lfcc=n_coeffs, log_lf=True, speckwargs=spec)
        elif kind == "cqcc":
            if cqcc_fmin * 2**cqcc_octaves > sample_rate / 2 + 1e-6:
                raise ValueError(
                    f"cqcc: fmin {cqcc_fmin} Hz x 2^{cqcc_octaves} octaves passes the Nyquist frequency {sample_rate / 2} Hz"
                )
            self.transform = None
            self.cqcc_args = dict(fmin=cqcc_fmin, bins_per_octave=cqcc_bins_per_octave, n_octaves=cqcc_octaves)
            self.register_buffer(
                "resample", uniform_resampling_matrix(cqcc_fmin, cqcc_bins_per_octave, cqcc_octaves, 16), persistent=False
            )
        else:
            raise ValueError(f"spectral feature must be one of {SPECTRAL_FEATURES}, got {kind!r}")

    @property
    def channels(self) -> int:
        return 3 * self.n_coeffs

    def forward(self, wave: Tensor) -> Tensor:
        with torch.no_grad():  # a fixed transform: no parameters, no gradient needed
            if self.transform is not None:
                x = self.transform(wave.float())  # (B, n_coeffs, frames)
            else:
                x = cqcc(wave, sample_rate=self.sample_rate, hop=self.hop, n_coeffs=self.n_coeffs,
                         resample=self.resample, **self.cqcc_args)  # (B, n_coeffs, frames)
            x = deltas(x)  # (B, 3 * n_coeffs, frames)
            x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)  # CMVN per utterance
        return x


class SpectralEncoder(nn.Module):
    """``(B, C, frames)`` -> ``(B, frames, dim)``: two 1-D convolutions (kernel 3) with BatchNorm and GELU."""

    def __init__(self, in_channels: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.GELU(), nn.Dropout(dropout),
            nn.Conv1d(dim, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).transpose(1, 2)  # (B, frames, dim)


def align_frames(x: Tensor, length: int) -> Tensor:
    """``x (B, L, D)`` linearly interpolated along time to ``(B, length, D)``."""
    if x.shape[1] == length:
        return x
    return F.interpolate(x.transpose(1, 2), size=length, mode="linear", align_corners=False).transpose(1, 2)


def frames_for(samples: int) -> int:
    """SSL frames of a waveform of ``samples`` samples (the wav2vec 2.0 convolution stack's output length)."""
    n = samples
    for k, s in _CONV_KERNELS_STRIDES:
        n = math.floor((n - k) / s) + 1
    return n
