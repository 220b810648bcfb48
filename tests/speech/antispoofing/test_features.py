"""Front ends: MFCC / LFCC / CQCC shapes, a pure tone in the right CQT bin, the SSL layer choice and
freezing, and SSL checkpoints in the Hugging Face and fairseq key layouts loaded strictly."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.hub import CheckpointMismatchError
from zoo.speech.antispoofing.features import (
    SpectralFrontEnd,
    SSLFrontEnd,
    build_ssl,
    cqt_log_power,
    deltas,
    frames_for,
    uniform_resampling_matrix,
)

SR = 16_000
TINY_SSL = dict(
    ssl_conv_dim=16, ssl_embed_dim=32, ssl_layers=3, ssl_heads=2, ssl_ff_dim=64, ssl_pos_conv_kernel=16,
    ssl_pos_conv_groups=4, n_coeffs=8, d_model=32, fusion_heads=2,
)


@pytest.mark.parametrize("kind", ["mfcc", "lfcc", "cqcc"])
def test_spectral_shapes(kind):
    fe = SpectralFrontEnd(kind, n_coeffs=20)
    x = fe(torch.randn(2, SR))  # 1 s
    assert x.shape == (2, 60, SR // 160 + 1)  # 20 coefficients + deltas + delta-deltas, 10 ms frames (centred)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x.mean(-1), torch.zeros(2, 60), atol=1e-4, rtol=0)  # CMVN


def test_spectral_rejects_unknown_kind_and_bad_cqt_range():
    with pytest.raises(ValueError, match="mfcc"):
        SpectralFrontEnd("plp")
    with pytest.raises(ValueError, match="Nyquist"):
        SpectralFrontEnd("cqcc", cqcc_fmin=100.0, cqcc_octaves=8)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 3150.0])
def test_pure_tone_lands_in_its_cqt_bin(freq):
    fmin, bins = 31.25, 24
    t = np.arange(SR) / SR
    logpow = cqt_log_power(np.sin(2 * np.pi * freq * t), SR, 160, fmin, bins, 8)  # (192, frames)
    assert logpow.shape[0] == 192
    peak = int(np.argmax(logpow[:, 20:-20].mean(axis=1)))
    assert peak == round(bins * math.log2(freq / fmin))


def test_uniform_resampling_is_linear_interpolation():
    m = uniform_resampling_matrix(100.0, 12, 3, 4)  # geometric bins 100 Hz .. 100 * 2^(35/12) Hz
    torch.testing.assert_close(m.sum(0), torch.ones(m.shape[1]))  # each uniform point is a convex mix
    geometric = 100.0 * 2.0 ** (np.arange(36) / 12)
    values = torch.tensor(geometric, dtype=torch.float32)  # a spectrum linear in frequency ...
    uniform = values @ m  # ... is resampled exactly onto the linear grid 100, 125, 150, ...
    torch.testing.assert_close(uniform, 100.0 + 25.0 * torch.arange(m.shape[1], dtype=torch.float32), atol=1e-3, rtol=0)


def test_deltas_of_a_ramp():
    x = torch.arange(20.0).view(1, 1, 20).expand(1, 2, 20)
    d = deltas(x)
    assert d.shape == (1, 6, 20)
    torch.testing.assert_close(d[0, 2:4, 2:-2], torch.ones(2, 16))  # slope 1 away from the edges
    torch.testing.assert_close(d[0, 4:6, 4:-4], torch.zeros(2, 12))


def _ssl(arch="wav2vec2", layers=3, **kw):
    return build_ssl(arch, 16, 32, layers, 2, 64, extractor_mode=kw.get("mode", "layer_norm"), conv_bias=True,
                     layer_norm_first=kw.get("pre_norm", True), pos_conv_kernel=16, pos_conv_groups=4, dropout=0.0)


def test_ssl_front_end_layer_choice_and_weighted_sum():
    wave = torch.randn(2, 8000)
    full = SSLFrontEnd(_ssl(), None, freeze=False, normalize_waveform=True).eval()
    assert full(wave).shape == (2, frames_for(8000), 32) and full.layer_weights.shape == (3,)
    # a model cut at layer 2 equals the full model's layer-2 output (plus the final norm of pre-norm models)
    cut = SSLFrontEnd(_ssl(), 2, freeze=False, normalize_waveform=True).eval()
    cut.model.load_state_dict({k: v for k, v in full.model.state_dict().items() if "transformer.layers.2." not in k})
    assert len(cut.model.encoder.transformer.layers) == 2
    with torch.no_grad():
        layers, _ = full.model.extract_features((wave - wave.mean(-1, keepdim=True)) / (wave.std(-1, keepdim=True) + 1e-5))
        expected = full.model.encoder.transformer.layer_norm(layers[1])
        torch.testing.assert_close(cut(wave), expected)
    with pytest.raises(ValueError, match="ssl_layer"):
        SSLFrontEnd(_ssl(), 4, freeze=False, normalize_waveform=True)


def test_frozen_ssl_gets_no_gradient_and_stays_in_eval_mode():
    fe = SSLFrontEnd(_ssl(), None, freeze=True, normalize_waveform=False).train()
    assert not fe.model.training
    fe(torch.randn(1, 4000)).sum().backward()
    assert all(p.grad is None for p in fe.model.parameters())
    assert fe.layer_weights.grad is not None  # the layer weights still learn


# ----------------------------------------------------------------- SSL checkpoints in the official key layouts
def _to_hf(sd: dict, wavlm: bool) -> dict:
    """Our torchaudio SSL keys -> the Hugging Face Wav2Vec2Model / WavLMModel layout (the inverse of the importer)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("conv.parametrizations.weight.original0", "conv.weight_g").replace("conv.parametrizations.weight.original1", "conv.weight_v")
        if k.startswith("encoder.feature_projection."):
            k = k[len("encoder."):]
        elif k.startswith("encoder.transformer."):
            k = "encoder." + k[len("encoder.transformer."):]
        m = re.match(r"(encoder\.layers\.\d+\.attention\.)attention\.in_proj_(weight|bias)", k)
        if wavlm and m:
            for name, part in zip("qkv", v.chunk(3)):
                out[f"{m.group(1)}{name}_proj.{m.group(2)}"] = part
            continue
        if wavlm and ".attention.attention.out_proj." in k:
            k = k.replace(".attention.attention.out_proj.", ".attention.out_proj.")
        out[k] = v
    out["masked_spec_embed"] = torch.zeros(32)  # a pre-training-only tensor, dropped by name
    return out


def _to_fairseq(sd: dict) -> dict:
    """Our keys -> the fairseq wav2vec 2.0 (XLS-R) layout, for the layer_norm extractor and pre-norm encoder."""
    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(\w+)", r"feature_extractor.conv_layers.\1.0.\2"),
        (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(\w+)", r"feature_extractor.conv_layers.\1.2.1.\2"),
        (r"encoder\.feature_projection\.projection\.(\w+)", r"post_extract_proj.\1"),
        (r"encoder\.feature_projection\.layer_norm\.(\w+)", r"layer_norm.\1"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
        (r"encoder\.transformer\.layer_norm\.(\w+)", r"encoder.layer_norm.\1"),
        (r"encoder\.transformer\.layers\.(\d+)\.attention\.(\w+)\.(\w+)", r"encoder.layers.\1.self_attn.\2.\3"),
        (r"encoder\.transformer\.layers\.(\d+)\.layer_norm\.(\w+)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(\w+)", r"encoder.layers.\1.fc1.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.(\w+)", r"encoder.layers.\1.fc2.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.(\w+)", r"encoder.layers.\1.final_layer_norm.\2"),
    ]
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, k):
                out[re.sub(pattern, repl, k)] = v
                break
        else:
            raise AssertionError(f"no fairseq rule for {k}")
    out["quantizer.vars"] = torch.zeros(1, 4, 8)  # pre-training heads, dropped by name
    out["project_q.weight"] = torch.zeros(8, 8)
    return out


def _random_ssl_state(model) -> dict:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.ssl.model.state_dict().items()}


@pytest.mark.parametrize("layout, arch", [("hf", "wav2vec2"), ("hf", "wavlm"), ("fairseq", "wav2vec2")])
def test_load_official_ssl_checkpoint(tmp_path, layout, arch):
    name = "antispoof_fusion_cross_attention"
    source = zoo.create_model(name, **TINY_SSL, ssl_arch=arch)
    ssl_state = _random_ssl_state(source)
    sd = _to_hf(ssl_state, arch == "wavlm") if layout == "hf" else _to_fairseq(ssl_state)
    if layout == "hf":
        sd = {f"wav2vec2.{k}": v for k, v in sd.items()}  # a *ForPreTraining / *ForCTC checkpoint's prefix
    save_file(sd, str(tmp_path / "ssl.safetensors"))
    model = zoo.load_official(name, tmp_path / "ssl.safetensors", **TINY_SSL, ssl_arch=arch)
    got = model.ssl.model.state_dict()
    for key, value in ssl_state.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    # the layers above a chosen ssl_layer are dropped, the rest still strict
    cut = zoo.load_official(name, tmp_path / "ssl.safetensors", **TINY_SSL, ssl_arch=arch, ssl_layer=2)
    assert len(cut.ssl.model.encoder.transformer.layers) == 2


def test_load_official_refuses_another_width(tmp_path):
    name = "antispoof_fusion_gated"
    sd = _to_hf(_random_ssl_state(zoo.create_model(name, **TINY_SSL)), wavlm=False)
    save_file(sd, str(tmp_path / "ssl.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="projection"):
        zoo.load_official(name, tmp_path / "ssl.safetensors", **{**TINY_SSL, "ssl_embed_dim": 64, "ssl_heads": 4})
    with pytest.raises(ValueError, match="no SSL branch"):
        zoo.load_official("antispoof_spectral_only", tmp_path / "ssl.safetensors", **TINY_SSL)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_ssl_front_end_last_layer_equals_torchaudio_forward(pre_norm):
    model = _ssl(pre_norm=pre_norm, mode="group_norm" if not pre_norm else "layer_norm")
    fe = SSLFrontEnd(model, 3, freeze=False, normalize_waveform=False).eval()
    wave = torch.randn(2, 6000)
    with torch.no_grad():
        expected, _ = model(wave)  # torchaudio's own forward: the encoder's final output
        torch.testing.assert_close(fe(wave), expected)


def test_ssl_branch_sizes_match_torchaudio_reference_models():
    """The registered SSL sizes are XLS-R 300M's (315,437,696 parameters in torchaudio's ``wav2vec2_xlsr_300m``);
    with ``ssl_arch="wavlm", ssl_conv_bias=False`` the branch is torchaudio's ``wavlm_large``."""
    import torchaudio.models as tam

    from zoo.hub import count_parameters

    with torch.device("meta"):
        ours = zoo.create_model("antispoof_ssl_only")
        assert count_parameters(ours.ssl.model) == count_parameters(tam.wav2vec2_xlsr_300m()) == 315_437_696
        wavlm = zoo.create_model("antispoof_ssl_only", ssl_arch="wavlm", ssl_conv_bias=False)
        assert count_parameters(wavlm.ssl.model) == count_parameters(tam.wavlm_large())
