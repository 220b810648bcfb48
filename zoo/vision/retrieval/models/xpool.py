"""X-Pool: text-conditioned pooling of CLIP frame embeddings for text-video retrieval.

Paper: Gorti, Vouitsis, Ma, Golestan, Volkovs, Garg, Yu, "X-Pool: Cross-Modal Language-Video Attention
for Text-Video Retrieval" (CVPR 2022, arXiv 2203.15086); official code ``layer6ai-labs/xpool``.

- backbone: CLIP ViT-B/32 (the ``ViT-B-32-quickgelu`` config of open_clip, i.e. OpenAI's CLIP with
  QuickGELU); the caption is encoded once (the EOT token's feature, projected), each of the video's
  frames independently (the class token's feature, projected);
- head (``pool_frames``): one LayerNorm shared by the text and the frame embeddings; single-head
  scaled dot-product attention with the text as the query and the video's frames as keys and values;
  output projection, LayerNorm, a residual linear layer with dropout (0.3), LayerNorm. Every linear
  layer of the head starts as the identity with zero bias, as in the official code, so at the start
  the head is a LayerNorm'd, text-weighted mean of the frames;
- score: cosine similarity of the caption and its text-conditioned video embedding, so every
  (caption, video) pair has its own video embedding;
- baseline head (``pooling="mean"``): the mean of the raw CLIP frame embeddings (the official code's
  ``avg`` pooling, CLIP4Clip's mean-pooling baseline), no parameters.

What differs from the official code, and the choices the paper leaves open:

- The CLIP backbone is written here (not imported from open_clip or transformers) so that every
  attention runs through :func:`zoo.core_attention.attention` (via
  :class:`~zoo.core_attention.MultiheadAttention`). Its module names are Hugging Face's ``CLIPModel``
  names (``text_model.encoder.layers.0.self_attn.q_proj``, ``vision_model.pre_layrnorm``, ...), the
  layout the official X-Pool checkpoints use under ``clip.``; the sizes are open_clip's
  ``ViT-B-32-quickgelu`` (tests compare configs, parameter counts and outputs with open_clip).
- The text encoder attends causally and pools at the arg-max token id (CLIP's EOT), so padding needs
  no mask: with a causal mask the tokens after EOT never reach it. This is what Hugging Face's CLIP
  computes with its padding mask, for OpenAI's tokenizer (open_clip's ``SimpleTokenizer``).
- The head's out_proj is applied to each frame's value before the weighted sum instead of to the sum.
  It is linear, so the result is the same, and it costs ``V*F*D^2`` instead of ``V*T*D^2``, which
  is what lets evaluation over thousands of captions run in chunks.
- ``head_heads`` (the official ``num_mha_heads``) defaults to 1, as the paper.

Official checkpoints: :func:`convert_official` maps ``{'epoch', 'state_dict', 'optimizer'}`` files
(``clip.*`` in Hugging Face names, ``pool_frames.*``) to this model, dropping the ``position_ids``
buffers older transformers versions saved; :func:`convert_clip_state_dict` maps OpenAI / open_clip
CLIP weights (``visual.conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``, ...) and
Hugging Face CLIP weights to :class:`CLIP`, for :func:`load_clip_weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core_attention import MultiheadAttention, attention

__all__ = [
    "CLIP", "MeanPool", "XPool", "XPoolConfig", "XPoolHead", "XPOOL_CONFIGS", "convert_clip_state_dict",
    "convert_official", "load_clip_weights",
]

POOLINGS = ("xpool", "mean")


# ----------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class XPoolConfig:
    """One variant: the CLIP backbone's sizes (open_clip names) and the pooling head."""

    pooling: str = "xpool"
    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    head_heads: int = 1
    head_dropout: float = 0.3
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"XPoolConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"XPoolConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for width, heads, what in (
            (self.vision_width, self.vision_heads, "vision"),
            (self.text_width, self.text_heads, "text"),
            (self.embed_dim, self.head_heads, "head"),
        ):
            if heads < 1 or width % heads:
                raise ValueError(f"XPoolConfig: {what} width {width} is not divisible by {heads} heads")
        if min(self.vision_layers, self.text_layers, self.context_length, self.vocab_size, self.embed_dim) < 1:
            raise ValueError(f"XPoolConfig: layers, context_length, vocab_size and embed_dim must be >= 1, got {self}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"XPoolConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")


# ----------------------------------------------------------------------------------------- CLIP blocks
class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    """Pre-norm transformer layer: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, backend: str) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(width, heads, backend=backend)
        self.layer_norm1 = nn.LayerNorm(width)
        self.mlp = CLIPMLP(width, int(width * mlp_ratio))
        self.layer_norm2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)  # (B, L, W)
        return x + self.mlp(self.layer_norm2(x))  # (B, L, W)


class CLIPEncoder(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, backend: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(width, heads, mlp_ratio, backend) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for layer in self.layers:
            x = layer(x, causal)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, width: int, context_length: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        return self.token_embedding(tokens) + self.position_embedding.weight[:length]  # (T, L, W)


class TextTransformer(nn.Module):
    def __init__(self, cfg: XPoolConfig) -> None:
        super().__init__()
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.embeddings = TextEmbeddings(cfg.vocab_size, cfg.text_width, cfg.context_length)
        self.encoder = CLIPEncoder(cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.mlp_ratio, cfg.attention_backend)
        self.final_layer_norm = nn.LayerNorm(cfg.text_width)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (T, L)`` (CLIP BPE ids, EOT = the largest id) -> EOT features ``(T, W)``."""
        if tokens.dim() != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(f"tokens must have shape (T, L <= {self.context_length}), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
        x = self.encoder(self.embeddings(tokens), causal=True)  # (T, L, W)
        x = self.final_layer_norm(x)
        eot = tokens.argmax(dim=-1)  # (T,)
        return x[torch.arange(x.shape[0], device=x.device), eot]  # (T, W)


class VisionEmbeddings(nn.Module):
    def __init__(self, width: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.position_embedding = nn.Embedding((image_size // patch_size) ** 2 + 1, width)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"images must have shape (N, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        patches = self.patch_embedding(images).flatten(2).transpose(1, 2)  # (N, P, W)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)  # (N, 1, W)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight  # (N, P + 1, W)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: XPoolConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg.vision_width, cfg.image_size, cfg.patch_size)
        self.pre_layrnorm = nn.LayerNorm(cfg.vision_width)  # sic: Hugging Face's name
        self.encoder = CLIPEncoder(cfg.vision_width, cfg.vision_layers, cfg.vision_heads, cfg.mlp_ratio, cfg.attention_backend)
        self.post_layernorm = nn.LayerNorm(cfg.vision_width)

    def forward(self, images: Tensor) -> Tensor:
        """``images (N, 3, S, S)`` -> class-token features ``(N, W)``."""
        x = self.encoder(self.pre_layrnorm(self.embeddings(images)))  # (N, P + 1, W)
        return self.post_layernorm(x[:, 0])  # (N, W)


class CLIP(nn.Module):
    """CLIP with Hugging Face's module names; ``get_text_features`` / ``get_image_features`` as there."""

    def __init__(self, cfg: XPoolConfig) -> None:
        super().__init__()
        self.text_model = TextTransformer(cfg)
        self.vision_model = VisionTransformer(cfg)
        self.visual_projection = nn.Linear(cfg.vision_width, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_weights(cfg)

    def _init_weights(self, cfg: XPoolConfig) -> None:
        """OpenAI CLIP's initialization (``CLIP.initialize_parameters``)."""
        nn.init.normal_(self.text_model.embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(self.text_model.embeddings.position_embedding.weight, std=0.01)
        nn.init.normal_(self.vision_model.embeddings.position_embedding.weight, std=cfg.vision_width**-0.5)
        for tower, width, layers in (
            (self.text_model, cfg.text_width, cfg.text_layers),
            (self.vision_model, cfg.vision_width, cfg.vision_layers),
        ):
            proj_std, attn_std, fc_std = width**-0.5 * (2 * layers) ** -0.5, width**-0.5, (2 * width) ** -0.5
            for layer in tower.encoder.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    nn.init.normal_(proj.weight, std=attn_std)
                    nn.init.zeros_(proj.bias)
                nn.init.normal_(layer.self_attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(layer.self_attn.out_proj.bias)
                nn.init.normal_(layer.mlp.fc1.weight, std=fc_std)
                nn.init.normal_(layer.mlp.fc2.weight, std=proj_std)
        nn.init.normal_(self.text_projection.weight, std=cfg.text_width**-0.5)
        nn.init.normal_(self.visual_projection.weight, std=cfg.vision_width**-0.5)

    def get_text_features(self, tokens: Tensor) -> Tensor:
        return self.text_projection(self.text_model(tokens))  # (T, D)

    def get_image_features(self, images: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(images))  # (N, D)


# ----------------------------------------------------------------------------------------- pooling heads
class TextToFramesAttention(nn.Module):
    """The official ``MultiHeadedAttention``: queries from the captions, keys and values from the frames."""

    def __init__(self, dim: int, heads: int, backend: str) -> None:
        super().__init__()
        self.heads, self.head_dim, self.backend = heads, dim // heads, backend
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _qk(self, text: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        num_videos = frames.shape[0]
        q = self.q_proj(text).unflatten(-1, (self.heads, self.head_dim)).transpose(0, 1)  # (H, T, Dh)
        q = q.unsqueeze(0).expand(num_videos, -1, -1, -1)  # (V, H, T, Dh), a view: q is computed once
        k = self.k_proj(frames).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (V, H, F, Dh)
        return q, k

    def forward(self, text: Tensor, frames: Tensor) -> Tensor:
        """``text (T, D)``, ``frames (V, F, D)`` -> ``(V, T, D)``."""
        q, k = self._qk(text, frames)
        # out_proj is linear: applied to each frame's value, then averaged by the weights (see the docstring)
        w_o = self.out_proj.weight.unflatten(1, (self.heads, self.head_dim))  # (D, H, Dh)
        v = self.v_proj(frames).unflatten(-1, (self.heads, self.head_dim))  # (V, F, H, Dh)
        v = torch.einsum("vfhe,dhe->vhfd", v, w_o)  # (V, H, F, D): each head's share of out_proj
        out = attention(q, k, v, backend=self.backend)  # (V, H, T, D)
        return out.sum(dim=1) + self.out_proj.bias  # (V, T, D)

    def weights(self, text: Tensor, frames: Tensor) -> Tensor:
        """Attention weights over frames, ``(V, H, T, F)``: the core's output for identity values."""
        q, k = self._qk(text, frames)
        eye = torch.eye(k.shape[2], dtype=k.dtype, device=k.device).expand(k.shape[0], self.heads, -1, -1)  # (V, H, F, F)
        return attention(q, k, eye, backend=self.backend)  # (V, H, T, F)


class XPoolHead(nn.Module):
    """The official ``Transformer`` pooling module (``pool_frames``), identity-initialized."""

    def __init__(self, dim: int, heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.cross_attn = TextToFramesAttention(dim, heads, backend)
        self.linear_proj = nn.Linear(dim, dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for name, param in self.named_parameters():
            if ("linear" in name or "proj" in name) and param.dim() == 2:
                nn.init.eye_(param)
            elif "linear" in name or "proj" in name:
                nn.init.zeros_(param)

    def forward(self, text: Tensor, frames: Tensor) -> Tensor:
        """``text (T, D)``, ``frames (V, F, D)`` -> text-conditioned video embeddings ``(V, T, D)``."""
        attn = self.layer_norm2(self.cross_attn(self.layer_norm1(text), self.layer_norm1(frames)))  # (V, T, D)
        return self.layer_norm3(attn + self.dropout(self.linear_proj(attn)))  # (V, T, D)

    def frame_weights(self, text: Tensor, frames: Tensor) -> Tensor:
        """``(V, T, F)``: attention over frames, averaged over heads."""
        return self.cross_attn.weights(self.layer_norm1(text), self.layer_norm1(frames)).mean(dim=1)


class MeanPool(nn.Module):
    """The baseline: every caption sees the same video embedding, the mean of its frames."""

    def forward(self, text: Tensor, frames: Tensor) -> Tensor:
        return frames.mean(dim=1).unsqueeze(1).expand(-1, text.shape[0], -1)  # (V, T, D)

    def frame_weights(self, text: Tensor, frames: Tensor) -> Tensor:
        v, f = frames.shape[:2]
        return frames.new_full((v, text.shape[0], f), 1.0 / f)  # (V, T, F)


# ----------------------------------------------------------------------------------------- model
class XPool(nn.Module):
    """CLIP + a frame-pooling head; ``forward(tokens, frames)`` scores every caption against every video.

    ``tokens (T, L)`` are CLIP BPE ids (open_clip's tokenizer), ``frames (V, F, 3, S, S)`` CLIP-normalized
    frames. Returns ``{"similarity": (T, V) cosine similarities, "logit_scale": exp(CLIP's logit scale)}``.
    For evaluation, :meth:`encode_text` and :meth:`encode_frames` run once per caption / video and
    :meth:`similarity` scores any block of them (``zoo.vision.retrieval.metrics.chunked_similarity``).
    """

    def __init__(self, config: XPoolConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = CLIP(config)
        self.pool_frames: nn.Module = (
            XPoolHead(config.embed_dim, config.head_heads, config.head_dropout, config.attention_backend)
            if config.pooling == "xpool"
            else MeanPool()
        )

    def no_weight_decay(self) -> set[str]:
        return {
            "clip.logit_scale", "clip.vision_model.embeddings.class_embedding",
            "clip.vision_model.embeddings.position_embedding.weight", "clip.text_model.embeddings.position_embedding.weight",
        }

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.clip.get_text_features(tokens)  # (T, D)

    def encode_frames(self, frames: Tensor) -> Tensor:
        if frames.dim() != 5:
            raise ValueError(f"frames must have shape (V, F, 3, S, S), got {tuple(frames.shape)}")
        v, f = frames.shape[:2]
        return self.clip.get_image_features(frames.flatten(0, 1)).unflatten(0, (v, f))  # (V, F, D)

    def pool(self, text: Tensor, frames: Tensor) -> Tensor:
        """Text-conditioned video embeddings ``(V, T, D)`` of ``text (T, D)`` and ``frames (V, F, D)``."""
        return self.pool_frames(text, frames)

    def similarity(self, text: Tensor, frames: Tensor) -> Tensor:
        """Cosine similarity ``(T, V)`` of every caption with its pooled embedding of every video."""
        text_n = F.normalize(text, dim=-1)  # (T, D)
        if isinstance(self.pool_frames, MeanPool):  # one embedding per video: a plain matrix product
            return text_n @ F.normalize(frames.mean(dim=1), dim=-1).T  # (T, V)
        video = F.normalize(self.pool(text, frames), dim=-1)  # (V, T, D)
        return torch.einsum("td,vtd->tv", text_n, video)  # (T, V)

    def frame_weights(self, text: Tensor, frames: Tensor) -> Tensor:
        """How much each frame contributes to each caption's video embedding, ``(V, T, F)``."""
        return self.pool_frames.frame_weights(text, frames)

    def forward(self, tokens: Tensor, frames: Tensor) -> dict[str, Tensor]:
        sim = self.similarity(self.encode_text(tokens), self.encode_frames(frames))  # (T, V)
        return {"similarity": sim, "logit_scale": self.clip.logit_scale.exp()}


# ----------------------------------------------------------------------------------------- variants
_VIT_B32 = dict(embed_dim=512, image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12)

XPOOL_CONFIGS: dict[str, XPoolConfig] = {
    "xpool_vit_b32": XPoolConfig(pooling="xpool", **_VIT_B32),
    "xpool_vit_b16": XPoolConfig(pooling="xpool", **{**_VIT_B32, "patch_size": 16}),
    "meanpool_vit_b32": XPoolConfig(pooling="mean", **_VIT_B32),
}


# ----------------------------------------------------------------------------------------- weight conversion
def _openai_layer_keys(src: str, dst: str, sd: dict[str, Tensor], out: dict[str, Tensor]) -> None:
    """One OpenAI ``resblocks.<i>`` (packed ``in_proj``) -> Hugging Face ``layers.<i>`` names."""
    q, k, v = sd.pop(f"{src}.attn.in_proj_weight").chunk(3, dim=0)
    qb, kb, vb = sd.pop(f"{src}.attn.in_proj_bias").chunk(3, dim=0)
    for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{dst}.self_attn.{name}.weight"], out[f"{dst}.self_attn.{name}.bias"] = w, b
    for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
        for p in ("weight", "bias"):
            out[f"{dst}.{b}.{p}"] = sd.pop(f"{src}.{a}.{p}")


def _from_openai(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    sd = dict(state_dict)
    for unused in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        sd.pop(unused, None)
    out: dict[str, Tensor] = {}
    for tower, src in (("text_model", "transformer"), ("vision_model", "visual.transformer")):
        layers = sorted({int(k.split(".")[len(src.split(".")) + 1]) for k in sd if k.startswith(f"{src}.resblocks.")})
        for i in layers:
            _openai_layer_keys(f"{src}.resblocks.{i}", f"{tower}.encoder.layers.{i}", sd, out)
    renames = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "logit_scale": "logit_scale",
    }
    for a, b in renames.items():
        out[b] = sd.pop(a)
    for a, b in (("ln_final", "text_model.final_layer_norm"), ("visual.ln_pre", "vision_model.pre_layrnorm"),
                 ("visual.ln_post", "vision_model.post_layernorm")):
        for p in ("weight", "bias"):
            out[f"{b}.{p}"] = sd.pop(f"{a}.{p}")
    out["text_projection.weight"] = sd.pop("text_projection").T.contiguous()  # OpenAI: x @ P; here: x @ W.T
    out["visual_projection.weight"] = sd.pop("visual.proj").T.contiguous()
    out.update(sd)  # anything left is reported by the strict filter as unexpected
    return out


def convert_clip_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """CLIP weights in OpenAI / open_clip layout or in Hugging Face layout -> :class:`CLIP` keys.

    The layout is recognized by its patch embedding (``visual.conv1.weight`` vs
    ``vision_model.embeddings.patch_embedding.weight``); Hugging Face's ``position_ids`` buffers are dropped.
    """
    if "visual.conv1.weight" in state_dict:
        return _from_openai(state_dict)
    if "vision_model.embeddings.patch_embedding.weight" in state_dict:
        return {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    raise KeyError(
        "not a CLIP state dict: found neither 'visual.conv1.weight' (OpenAI / open_clip) nor "
        f"'vision_model.embeddings.patch_embedding.weight' (Hugging Face); first keys: {sorted(state_dict)[:5]}"
    )


def load_clip_weights(model: XPool, path: str | Path) -> XPool:
    """Load local OpenAI / open_clip / Hugging Face CLIP weights into ``model.clip``, strictly."""
    from zoo.hub import load_state_dict_strict, read_official_file, strict_filter

    source = str(path)
    try:
        converted = convert_clip_state_dict(read_official_file(path))
    except KeyError as err:
        raise ValueError(f"{source}: {err.args[0]}") from err
    load_state_dict_strict(model.clip, strict_filter(converted, model.clip, source=source), source=source)
    return model


def convert_official(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Tensor]:
    """An official X-Pool ``state_dict`` (``clip.*`` in Hugging Face names, ``pool_frames.*``) -> ours.

    :func:`zoo.load_official` has already taken ``state_dict`` out of ``{'epoch', 'state_dict',
    'optimizer'}``; checkpoints trained with the official ``--huggingface`` off (OpenAI's CLIP) are
    converted too. The hub's strict filter then rejects anything missing, extra or mis-shaped.
    """
    clip = {k[len("clip."):]: v for k, v in state_dict.items() if k.startswith("clip.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("clip.")}
    if not clip:
        raise KeyError(f"no 'clip.' keys: not an X-Pool checkpoint (first keys: {sorted(state_dict)[:5]})")
    return {**{f"clip.{k}": v for k, v in convert_clip_state_dict(clip).items()}, **rest}
