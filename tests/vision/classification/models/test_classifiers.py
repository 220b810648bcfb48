"""Astroformer and CrossFormer: registry-driven forward/backward/save-load, paper parameter counts,
timm parity and registration, features_only, padding/masking against a naive per-token loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo
from zoo.hub import model_entry
from zoo.vision.classification.models.astroformer import ASTROFORMER_CONFIGS
from zoo.vision.classification.models.crossformer import (
    CROSSFORMER_CONFIGS,
    PAPER_RESULTS,
    CrossFormer,
    CrossFormerBlock,
)

NAMES = sorted([*ASTROFORMER_CONFIGS, *CROSSFORMER_CONFIGS])


def _tiny(name: str, **extra):
    entry = model_entry(name)
    model = zoo.create_model(name, **{**entry.test_overrides, **extra})
    args, kwargs = entry.test_input(model)
    return model, args, kwargs


def test_every_variant_is_registered_in_zoo_and_timm():
    assert set(zoo.list_models("astroformer_*")) == set(ASTROFORMER_CONFIGS)
    assert set(zoo.list_models("crossformer*")) == set(CROSSFORMER_CONFIGS)
    for name in NAMES:
        assert timm.is_model(name), name


@pytest.mark.parametrize("name", NAMES)
def test_tiny_variant_forward_backward_save_load(name, tmp_path):
    model, args, kwargs = _tiny(name)
    out = model(*args, **kwargs)
    assert out.shape == (args[0].shape[0], model.num_classes)
    out.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        ref = model(*args, **kwargs)
    zoo.save_pretrained(model, tmp_path / name, name=name)
    loaded = zoo.load_pretrained(tmp_path / name).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, **kwargs), ref)


@pytest.mark.parametrize("name", sorted(CROSSFORMER_CONFIGS))
def test_crossformer_parameter_count_matches_paper(name):
    with torch.device("meta"):  # counting only: no memory, no init time
        model = timm.create_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    paper = PAPER_RESULTS[name][0]
    assert abs(n / paper - 1) < 0.01, f"{name}: {n:.2f}M vs paper {paper}M"


@pytest.mark.parametrize("name", sorted(ASTROFORMER_CONFIGS))
def test_astroformer_keys_and_counts_are_timm_maxxvit(name):
    from timm.models.maxxvit import MaxxVit

    cfg = ASTROFORMER_CONFIGS[name]
    with torch.device("meta"):
        ours = timm.create_model(name, num_classes=10)
        theirs = MaxxVit(cfg.to_timm(), img_size=cfg.img_size, num_classes=10)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd)
    assert "stages.3.blocks.0.attn.rel_pos.relative_position_bias_table" in ours_sd
    assert ours_sd["stages.3.blocks.0.attn.rel_pos.relative_position_bias_table"].shape == (15 * 15, cfg.embed_dim[3] // 32)


def test_astroformer_equals_timm_maxxvit_numerically():
    from timm.models.maxxvit import MaxxVit

    model, (x,), _ = _tiny("astroformer_1")
    model.eval()
    theirs = MaxxVit(model.config.to_timm(), img_size=model.config.img_size, num_classes=5).eval()
    theirs.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-5)
        # a smaller input attends over the matching part of the table (here: 1x1 of 2x2)
        assert model(x[..., :32, :32]).shape == (2, 5)
    with pytest.raises(ValueError, match="relative position table"):
        model(torch.randn(1, 3, 128, 128))


def _naive_attend(block: CrossFormerBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's attention branch token by token: group membership from coordinates, masked pads."""
    b, h, w, c = x.shape
    g, itv, lda = block.group_size, block.interval, block.long_distance
    if min(h, w) <= g:
        g, itv, lda = min(h, w), 1, False
    attn = block.attn
    nh = attn.num_heads
    qkv = attn.qkv(x).view(b, h, w, 3, nh, c // nh)  # (B, H, W, 3, nh, D)

    def group_and_cell(y, xx):
        if lda:
            span = g * itv
            return (y // span, xx // span, y % itv, xx % itv), ((y % span) // itv, (xx % span) // itv)
        return (y // g, xx // g), (y % g, xx % g)

    members: dict = {}
    for y in range(h):
        for xx in range(w):
            gid, cell = group_and_cell(y, xx)
            members.setdefault(gid, []).append(((y, xx), cell))
    out = torch.zeros(b, h, w, nh, c // nh, dtype=x.dtype)
    for group in members.values():
        for (qy, qx), qcell in group:
            keys = [pos for pos, _ in group]
            offsets = torch.tensor([[qcell[0] - kc[0], qcell[1] - kc[1]] for _, kc in group], dtype=x.dtype)
            bias = attn.pos.mlp(offsets).t()  # (nh, K)
            q = qkv[:, qy, qx, 0]  # (B, nh, D)
            k = torch.stack([qkv[:, ky, kx, 1] for ky, kx in keys], dim=2)  # (B, nh, K, D)
            v = torch.stack([qkv[:, ky, kx, 2] for ky, kx in keys], dim=2)
            logits = torch.einsum("bhd,bhkd->bhk", q, k) / math.sqrt(c // nh) + bias
            out[:, qy, qx] = torch.einsum("bhk,bhkd->bhd", logits.softmax(-1), v)
    return attn.proj(out.reshape(b, h, w, c))


@pytest.mark.parametrize(
    "hw,group,interval,lda",
    [((6, 6), 3, 2, False), ((7, 5), 3, 2, False), ((7, 10), 2, 2, True), ((9, 9), 2, 3, True), ((3, 4), 5, 2, True)],
    ids=["sda-even", "sda-pad", "lda-pad", "lda-pad2", "small-map"],
)
def test_crossformer_grouping_padding_masking_matches_naive(hw, group, interval, lda):
    block = CrossFormerBlock(16, 2, group, interval, long_distance=lda, backend="reference").double().eval()
    x = torch.randn(2, *hw, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block._attend(x), _naive_attend(block, x))


def _official_crossformer_state_dict(cfg, old_buffers: bool) -> dict[str, torch.Tensor]:
    """A state dict with the official CrossFormer(++) key layout, written from the official module
    names and shapes (PatchEmbed.projs, Stage.blocks/downsample, Attention.pos/qkv/proj, Mlp.fc1/fc2,
    ex_conv/ex_ln, PatchMerging.norm/reductions), not from this implementation."""
    sd: dict[str, torch.Tensor] = {}
    r = torch.randn
    e, n = cfg.embed_dim, len(cfg.depths)

    def split(total, kernels):
        return [total // 2 ** (i + 1) if i < len(kernels) - 1 else total // 2**i for i in range(len(kernels))]

    for k, (ps, d) in enumerate(zip(cfg.patch_size, split(e, cfg.patch_size))):
        sd[f"patch_embed.projs.{k}.weight"], sd[f"patch_embed.projs.{k}.bias"] = r(d, 3, ps, ps), r(d)
    sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"] = r(e), r(e)
    for s in range(n):
        dim, heads, pd = e * 2**s, cfg.num_heads[s], e * 2**s // 16
        for bi in range(cfg.depths[s]):
            p = f"layers.{s}.blocks.{bi}."
            for ln in ("norm1", "norm2"):
                sd[p + ln + ".weight"], sd[p + ln + ".bias"] = r(dim), r(dim)
            sd[p + "attn.pos.pos_proj.weight"], sd[p + "attn.pos.pos_proj.bias"] = r(pd, 2), r(pd)
            for j, out_dim in (("pos1", pd), ("pos2", pd), ("pos3", heads)):
                sd[p + f"attn.pos.{j}.0.weight"], sd[p + f"attn.pos.{j}.0.bias"] = r(pd), r(pd)
                sd[p + f"attn.pos.{j}.2.weight"], sd[p + f"attn.pos.{j}.2.bias"] = r(out_dim, pd), r(out_dim)
            sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
            sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(dim, dim), r(dim)
            sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(4 * dim, dim), r(4 * dim)
            sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(dim, 4 * dim), r(dim)
            if cfg.use_acl and (bi + 1) % 3 == 0 and bi < cfg.depths[s] - 1:
                sd[p + "ex_conv.weight"], sd[p + "ex_conv.bias"] = r(dim, 1, 3, 3), r(dim)
                sd[p + "ex_ln.weight"], sd[p + "ex_ln.bias"] = r(dim), r(dim)
            if old_buffers:  # CrossFormer v1 saved these (persistent) buffers
                g = min(cfg.group_size[s], 56 // 2**s)
                sd[p + "attn.biases"] = r((2 * g - 1) ** 2, 2)
                sd[p + "attn.relative_position_index"] = torch.zeros(g**4, dtype=torch.long)
        if s < n - 1:
            p = f"layers.{s}.downsample."
            sd[p + "norm.weight"], sd[p + "norm.bias"] = r(dim), r(dim)
            for k, (ps, d) in enumerate(zip(cfg.merge_size[s], split(2 * dim, cfg.merge_size[s]))):
                sd[p + f"reductions.{k}.weight"], sd[p + f"reductions.{k}.bias"] = r(d, dim, ps, ps), r(d)
    c = e * 2 ** (n - 1)
    sd["norm.weight"], sd["norm.bias"] = r(c), r(c)
    sd["head.weight"], sd["head.bias"] = r(cfg.num_classes, c), r(cfg.num_classes)
    return sd


@pytest.mark.parametrize("name", ["crossformer_s", "crossformerpp_s"])
def test_crossformer_filter_converts_official_layout_and_refuses_wrong_shape(name):
    from zoo.vision.classification.models.crossformer import checkpoint_filter_fn

    cfg = replace(CROSSFORMER_CONFIGS[name], **model_entry(name).test_overrides)
    model = CrossFormer(cfg)
    official = _official_crossformer_state_dict(cfg, old_buffers=name == "crossformer_s")
    converted = checkpoint_filter_fn({"model": official, "epoch": 3}, model)
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.layers[0].blocks[0].attn.pos.pos1[2].weight, official["layers.0.blocks.0.attn.pos.pos1.2.weight"])

    broken = dict(official)
    broken["layers.1.blocks.0.attn.qkv.weight"] = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"shape mismatch.*\n.*layers\.1\.blocks\.0\.attn\.qkv\.weight"):
        checkpoint_filter_fn(broken, model)
    missing = {k: v for k, v in official.items() if "mlp.fc2" not in k}
    with pytest.raises(ValueError, match="missing"):
        checkpoint_filter_fn(missing, model)
    extra = {**official, "layers.0.blocks.0.attn.cpe.weight": torch.randn(3)}
    with pytest.raises(ValueError, match="unexpected"):
        checkpoint_filter_fn(extra, model)


def test_timm_pretrained_loads_local_official_crossformer_checkpoint(tmp_path):
    cfg = CROSSFORMER_CONFIGS["crossformer_t"]
    official = {k: v * 0.02 for k, v in _official_crossformer_state_dict(cfg, old_buffers=True).items()}
    path = tmp_path / "crossformer-t.pth"
    torch.save({"model": official}, path)
    model = timm.create_model("crossformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(model.head.weight, official["head.weight"])
    assert torch.equal(model.layers[2].blocks[3].attn.qkv.weight, official["layers.2.blocks.3.attn.qkv.weight"])
    # a new head for 10 classes keeps the backbone weights
    model10 = timm.create_model(
        "crossformer_t", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert model10.head.weight.shape == (10, 512)
    assert torch.equal(model10.patch_embed.projs[3].weight, official["patch_embed.projs.3.weight"])


def test_timm_pretrained_loads_local_astroformer_checkpoint(tmp_path):
    ref = timm.create_model("astroformer_0", num_classes=10, img_size=64)
    path = tmp_path / "astroformer_0.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = timm.create_model(
        "astroformer_0", pretrained=True, num_classes=10, img_size=64, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # a 10-class checkpoint into a 10-class model: every weight loads, the head too
        torch.testing.assert_close(model(x), ref.eval()(x), rtol=0, atol=0)
    assert torch.equal(model.head.fc.weight, ref.head.fc.weight)
    # a 100-class checkpoint into a 10-class model: timm's fine-tuning route keeps a fresh head
    ref100 = timm.create_model("astroformer_0", num_classes=100, img_size=64)
    torch.save(ref100.state_dict(), tmp_path / "astroformer_100.pth")
    model10 = timm.create_model(
        "astroformer_0", pretrained=True, num_classes=10, img_size=64,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "astroformer_100.pth")),
    )
    assert model10.head.fc.weight.shape == (10, 768)
    assert torch.equal(model10.stem.conv1.weight, ref100.stem.conv1.weight)
    sd = ref.state_dict()
    sd["stages.0.blocks.0.conv1_1x1.weight"] = torch.randn(3, 3, 1, 1)
    from zoo.vision.classification.models.astroformer import checkpoint_filter_fn

    with pytest.raises(ValueError, match="shape mismatch"):
        checkpoint_filter_fn(sd, ref)


def test_features_only_shapes():
    feats = timm.create_model("crossformer_t", features_only=True)
    outs = feats(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    assert feats.feature_info.channels() == [64, 128, 256, 512]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    # any resolution: 72x56 is not a multiple of 7 * 8 at stage 1 (padding + masking)
    outs = feats(torch.randn(1, 3, 72, 56))
    assert [tuple(o.shape[-2:]) for o in outs] == [(18, 14), (9, 7), (4, 3), (2, 1)]
    # a subset prunes the unused stages: stage outputs before downsampling, as the official det backbone
    two = timm.create_model("crossformerpp_s", features_only=True, out_indices=(1, 2))
    assert [tuple(o.shape) for o in two(torch.randn(1, 3, 64, 64))] == [(1, 128, 8, 8), (1, 256, 4, 4)]
    assert len(two.model.layers) == 3 and two.model.layers[2].downsample is None

    astro = timm.create_model("astroformer_0", features_only=True, img_size=64, out_indices=(1, 2, 3, 4))
    outs = astro(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]


def test_timm_interface():
    model = timm.create_model("crossformer_t", num_classes=10)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 2, 2, 512)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model.forward_head(torch.randn(1, 2, 2, 512), pre_logits=True).shape == (1, 512)
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["astroformer_0", "crossformerpp_s"])
def test_tiny_model_overfits_16_images(name):
    model, _, _ = _tiny(name, num_classes=4, drop_path_rate=0.0)
    size = 64 if name.startswith("astro") else 40
    x = torch.randn(16, 3, size, size)
    y = torch.arange(16) % 4
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_flex_score_mod_path_matches_reference():
    """The FlexAttention forms (score_mod + block mask) give the reference outputs (eager flex on CPU)."""
    from zoo.vision.classification.models.astroformer import CoreAttention2d

    block = CrossFormerBlock(16, 2, 3, 2, long_distance=True, backend="reference").eval()
    x = torch.randn(2, 7, 10, 16)  # padded to 12x12, LDA regions of 6x6, masked pads
    attn = CoreAttention2d(32, 32, 16, (3, 3), backend="reference").eval()
    y = torch.randn(2, 32, 3, 3)
    with torch.no_grad():
        ref = [block._attend(x), attn(y), attn(y[..., :2, :3])]
        block.attn.backend = attn.backend = "flex"
        out = [block._attend(x), attn(y), attn(y[..., :2, :3])]
    for r, o in zip(ref, out):
        torch.testing.assert_close(o, r)


def test_load_official_astroformer_keeps_a_10_class_head_exactly(tmp_path):
    """zoo.load_official on the official (timm MaxxVit) layout: the 10-class head is the file's, and a
    head of another size is an error naming it, not a silently random layer."""
    tiny = dict(model_entry("astroformer_0").test_overrides, num_classes=10)
    official = zoo.create_model("astroformer_0", **tiny).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}, "args": __import__("argparse").Namespace(lr=1)},
               tmp_path / "official.pth")
    model = zoo.load_official("astroformer_0", tmp_path / "official.pth", **tiny)
    assert torch.equal(model.head.fc.weight, official["head.fc.weight"])
    assert all(torch.equal(v, official[k]) for k, v in model.state_dict().items())
    with pytest.raises(zoo.hub.CheckpointMismatchError, match=r"head\.fc\.weight: checkpoint \(10, 32\) vs model \(100, 32\)"):
        zoo.load_official("astroformer_0", tmp_path / "official.pth", **{**tiny, "num_classes": 100})


@pytest.mark.parametrize("name", ["crossformer_s", "crossformerpp_s"])
def test_load_official_crossformer(name, tmp_path):
    cfg = replace(CROSSFORMER_CONFIGS[name], **model_entry(name).test_overrides)
    official = _official_crossformer_state_dict(cfg, old_buffers=name == "crossformer_s")
    torch.save({"model": official, "optimizer": {}, "epoch": 300}, tmp_path / "official.pth")
    model = zoo.load_official(name, tmp_path / "official.pth", **model_entry(name).test_overrides)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in official.items() if k in own)
    assert not any(k.endswith(("attn.biases", "attn.relative_position_index")) for k in own)
    del official["layers.0.blocks.0.mlp.fc2.weight"]
    torch.save({"model": official}, tmp_path / "broken.pth")
    with pytest.raises(zoo.hub.CheckpointMismatchError, match=r"missing key.*\n.*layers\.0\.blocks\.0\.mlp\.fc2\.weight"):
        zoo.load_official(name, tmp_path / "broken.pth", **model_entry(name).test_overrides)
