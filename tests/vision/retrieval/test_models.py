"""X-Pool vs an independent reference: open_clip's CLIP, a naive per-pair head, identity init, official keys."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.vision.retrieval.models import TINY_CLIP, XPoolConfig
from zoo.vision.retrieval.models.xpool import convert_clip_state_dict, load_clip_weights


def _open_clip(cfg: dict) -> torch.nn.Module:
    return open_clip.CLIP(
        cfg["embed_dim"],
        vision_cfg=dict(image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["vision_width"],
                        layers=cfg["vision_layers"], head_width=cfg["vision_width"] // cfg["vision_heads"]),
        text_cfg=dict(context_length=cfg["context_length"], vocab_size=49408, width=cfg["text_width"],
                      heads=cfg["text_heads"], layers=cfg["text_layers"]),
        quick_gelu=True,
    )


def test_vit_b32_is_open_clips_config_and_parameter_count():
    ref = open_clip.get_model_config("ViT-B-32-quickgelu")
    cfg = XPoolConfig()
    assert (cfg.embed_dim, cfg.image_size, cfg.patch_size, cfg.vision_width, cfg.vision_layers) == (
        ref["embed_dim"], ref["vision_cfg"]["image_size"], ref["vision_cfg"]["patch_size"], ref["vision_cfg"]["width"],
        ref["vision_cfg"]["layers"])
    assert (cfg.text_width, cfg.text_heads, cfg.text_layers, cfg.context_length, cfg.vocab_size) == (
        ref["text_cfg"]["width"], ref["text_cfg"]["heads"], ref["text_cfg"]["layers"], ref["text_cfg"]["context_length"],
        ref["text_cfg"]["vocab_size"])
    with torch.device("meta"):
        mean = zoo.create_model("meanpool_vit_b32")
        xpool = zoo.create_model("xpool_vit_b32")
        oc = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None, device="meta")
    n_clip = sum(p.numel() for p in oc.parameters())
    assert n_clip == 151_277_313  # OpenAI CLIP ViT-B/32
    assert sum(p.numel() for p in mean.parameters()) == n_clip
    assert sum(p.numel() for p in xpool.parameters()) == n_clip + 5 * (512 * 512 + 512) + 3 * 2 * 512


def test_clip_matches_open_clip_on_the_same_weights(tmp_path):
    torch.manual_seed(0)
    ref = _open_clip(TINY_CLIP).eval()
    model = zoo.create_model("xpool_vit_b32", **TINY_CLIP).eval()
    torch.save(ref.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    load_clip_weights(model, tmp_path / "open_clip_pytorch_model.bin")
    tokens = open_clip.get_tokenizer("ViT-B-32-quickgelu", context_length=16)(["a red circle moves to the left", "blue"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), ref.encode_text(tokens), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.clip.get_image_features(images), ref.encode_image(images), atol=1e-5, rtol=1e-5)
    assert torch.equal(model.clip.logit_scale, ref.logit_scale)


def _naive_head(head, text, frames):
    """The official Transformer pooling, pair by pair, with explicit softmax."""
    ln1, attn = head.layer_norm1, head.cross_attn
    out = torch.empty(frames.shape[0], text.shape[0], text.shape[1])
    for v in range(frames.shape[0]):
        for t in range(text.shape[0]):
            q = attn.q_proj(ln1(text[t]))  # (D,)
            k, val = attn.k_proj(ln1(frames[v])), attn.v_proj(ln1(frames[v]))  # (F, D)
            heads = []
            for h in range(attn.heads):
                s = slice(h * attn.head_dim, (h + 1) * attn.head_dim)
                w = torch.softmax(k[:, s] @ q[s] / math.sqrt(attn.head_dim), dim=0)  # (F,)
                heads.append(w @ val[:, s])
            a = head.layer_norm2(attn.out_proj(torch.cat(heads)))
            out[v, t] = head.layer_norm3(a + head.linear_proj(a))
    return out


@pytest.mark.parametrize("heads", [1, 2])
def test_xpool_head_matches_a_naive_per_pair_loop(heads):
    torch.manual_seed(0)
    model = zoo.create_model("xpool_vit_b32", **{**TINY_CLIP, "head_heads": heads}).eval()
    head = model.pool_frames
    with torch.no_grad():
        for p in head.parameters():  # away from the identity init, so every projection matters
            p.add_(0.3 * torch.randn_like(p))
        text, frames = torch.randn(5, 32), torch.randn(3, 7, 32)
        torch.testing.assert_close(head(text, frames), _naive_head(head, text, frames), atol=1e-5, rtol=1e-4)
        sim = model.similarity(text, frames)  # (T, V) cosine of text and its pooled video
        naive = F.cosine_similarity(text[None], _naive_head(head, text, frames), dim=-1).T
        torch.testing.assert_close(sim, naive, atol=1e-5, rtol=1e-4)
        weights = model.frame_weights(text, frames)  # (V, T, F)
        assert weights.shape == (3, 5, 7) and torch.allclose(weights.sum(-1), torch.ones(3, 5))


def test_identity_init_is_a_layernormed_weighted_mean():
    torch.manual_seed(1)
    model = zoo.create_model("xpool_vit_b32", **TINY_CLIP).eval()
    head = model.pool_frames
    for name, p in head.named_parameters():
        if "proj" in name:
            assert torch.equal(p, torch.eye(32) if p.dim() == 2 else torch.zeros(32)), name
    text, frames = torch.randn(4, 32), torch.randn(2, 6, 32)
    t, f = F.layer_norm(text, (32,)), F.layer_norm(frames, (32,))
    w = torch.softmax(torch.einsum("td,vfd->vtf", t, f) / math.sqrt(32), dim=-1)  # (V, T, F)
    expected = F.layer_norm(torch.einsum("vtf,vfd->vtd", w, f), (32,))
    with torch.no_grad():
        torch.testing.assert_close(head(text, frames), expected, atol=1e-4, rtol=1e-4)


def test_mean_pooling_is_the_cosine_to_the_frame_mean():
    torch.manual_seed(0)
    model = zoo.create_model("meanpool_vit_b32", **TINY_CLIP).eval()
    text, frames = torch.randn(4, 32), torch.randn(3, 5, 32)
    expected = F.normalize(text, dim=-1) @ F.normalize(frames.mean(1), dim=-1).T
    torch.testing.assert_close(model.similarity(text, frames), expected)


def _hf_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """Our CLIP's weights under the Hugging Face CLIPModel key names, plus its position_ids buffers."""
    sd = {k: v.clone() for k, v in model.clip.state_dict().items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    return sd


HF_KEYS = (  # names of transformers' CLIPModel, as the official X-Pool checkpoints store them under clip.
    "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
    "text_model.encoder.layers.0.self_attn.k_proj.weight", "text_model.encoder.layers.0.self_attn.out_proj.bias",
    "text_model.encoder.layers.1.mlp.fc1.weight", "text_model.encoder.layers.1.layer_norm2.bias",
    "text_model.final_layer_norm.weight", "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.patch_embedding.weight", "vision_model.pre_layrnorm.weight",
    "vision_model.post_layernorm.bias", "visual_projection.weight", "text_projection.weight", "logit_scale",
)


def test_load_official_xpool_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = zoo.create_model("xpool_vit_b32", **TINY_CLIP)
    clip = _hf_clip_state_dict(source)
    assert set(HF_KEYS) <= set(clip)
    state = {**{f"clip.{k}": v for k, v in clip.items()}, **{f"pool_frames.{k}": v + 0.1 for k, v in source.pool_frames.state_dict().items()}}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-6, "params": [0]}]}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": optimizer}, tmp_path / "model_best.pth")
    loaded = zoo.load_official("xpool_vit_b32", tmp_path / "model_best.pth", **TINY_CLIP)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    bad = dict(state)
    bad.pop("pool_frames.linear_proj.weight")
    torch.save({"epoch": 3, "state_dict": bad, "optimizer": optimizer}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="pool_frames.linear_proj.weight"):
        zoo.load_official("xpool_vit_b32", tmp_path / "broken.pth", **TINY_CLIP)


def test_hf_and_openai_layouts_convert_to_the_same_weights():
    torch.manual_seed(0)
    ref = _open_clip(TINY_CLIP)
    from_openai = convert_clip_state_dict(ref.state_dict())
    model = zoo.create_model("xpool_vit_b32", **TINY_CLIP)
    model.clip.load_state_dict(from_openai, strict=True)
    from_hf = convert_clip_state_dict(_hf_clip_state_dict(model))
    assert from_hf.keys() == from_openai.keys()
    with pytest.raises(KeyError, match="not a CLIP state dict"):
        convert_clip_state_dict({"foo": torch.zeros(1)})


def test_tiny_model_overfits_eight_pairs():
    torch.manual_seed(0)
    model = zoo.create_model("xpool_vit_b32", **{**TINY_CLIP, "head_dropout": 0.0})
    from zoo.vision.retrieval.metrics import retrieval_metrics
    from zoo.vision.retrieval.module import info_nce

    tokens = torch.randint(1, 49000, (8, 6))
    tokens[:, 0], tokens[:, -1] = 49406, 49407
    frames = torch.randn(8, 3, 3, 32, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(60):
        out = model(tokens, frames)
        loss = info_nce(out["similarity"], out["logit_scale"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        sim = model(tokens, frames)["similarity"]
    assert loss.item() < 0.1
    assert retrieval_metrics(sim)["t2v"]["R@1"] == 100.0
