"""``TextVideoRetrieval``: X-Pool's training recipe and its evaluation over the whole split.

- loss: symmetric InfoNCE over the batch's caption-video pairs, logits = cosine similarity times
  CLIP's learned logit scale, the scale clamped at 100 after every optimizer step (official);
- optimizer: AdamW with two learning rates, CLIP (``clip_lr``, 1e-6) and the new layers (``lr``, 3e-5),
  weight decay 0.2 under the zoo's one decay rule (:mod:`zoo.training.optim`), linear warmup over
  ``warmup_ratio`` (10%) of the steps then cosine to ``min_lr_ratio`` (0);
- evaluation: every caption and every video of the split are encoded once (a metric with ``cat``
  states, so DDP gathers them); after the epoch the caption x video similarity is computed in chunks
  (:func:`~zoo.vision.retrieval.metrics.chunked_similarity`) and scored by
  :func:`~zoo.vision.retrieval.metrics.retrieval_metrics`, logged as ``<split>/t2v/R@1`` ...
  ``<split>/v2t/MnR``; with ``dual_softmax_temperature`` also ``<split>/dsl_t2v/...`` and
  ``<split>/dsl_v2t/...`` (re-ranked, reported apart);
- checkpoints follow ``val/t2v/R@1`` (the validation split, never test);
- after ``test``: ``retrieval_top5.png`` (:class:`~zoo.vision.retrieval.figures.RetrievalFigure`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import Metric

from zoo.training.module import ZooModule
from zoo.training.optim import no_weight_decay_names, total_steps, warmup_cosine

from .figures import RetrievalFigure
from .metrics import chunked_similarity, dual_softmax, retrieval_metrics

__all__ = ["RetrievalEmbeddings", "TextVideoRetrieval", "info_nce"]


def info_nce(sim: Tensor, logit_scale: Tensor, video_of_text: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE of a batch's ``(T, V)`` similarities: mean of caption->video and video->caption
    cross-entropy, the positive of caption ``i`` being video ``video_of_text[i]`` (default ``i``)."""
    logits = sim * logit_scale  # (T, V)
    target = torch.arange(sim.shape[0], device=sim.device) if video_of_text is None else video_of_text
    if logits.shape[0] != logits.shape[1] or not torch.equal(target, torch.arange(len(target), device=target.device)):
        raise ValueError(f"info_nce: needs one caption per video in order, got sim {tuple(sim.shape)}")
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class RetrievalEmbeddings(Metric):
    """Every caption and frame embedding of a split, gathered across processes, in dataset order.

    A distributed sampler may repeat a video to even out the processes: each video and each of its
    captions (keyed by video and position) is kept once.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("text", "frames", "caption_video", "caption_key", "video_index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, text: Tensor, frames: Tensor, text_video: Tensor, video_index: Tensor) -> None:
        starts = torch.searchsorted(text_video, text_video, right=False)  # first row of each caption's video
        position = torch.arange(len(text_video), device=text_video.device) - starts  # caption number within its video
        caption_video = video_index[text_video]  # (T,) the caption's video, as a dataset index
        self.text.append(text.detach().float())
        self.frames.append(frames.detach().float())
        self.caption_video.append(caption_video)
        self.caption_key.append(caption_video * _MAX_CAPTIONS + position)
        self.video_index.append(video_index)

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        """``text (T, D)``, ``frames (V, F, D)``, ``video_of_text (T,)`` in [0, V), sorted by dataset index."""
        text, frames, caption_video, caption_key, video_index = (
            torch.cat(s) if isinstance(s, list) else s
            for s in (self.text, self.frames, self.caption_video, self.caption_key, self.video_index)
        )
        videos, first_video = _first_of_each(video_index)  # (V,) sorted dataset indices
        _, first_caption = _first_of_each(caption_key)  # captions sorted by (video, position)
        video_of_text = torch.searchsorted(videos, caption_video[first_caption])  # (T,)
        return text[first_caption], frames[first_video], video_of_text


_MAX_CAPTIONS = 1 << 20  # captions per video, for the caption keys


def _first_of_each(index: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique values of ``index`` and the position of each one's first occurrence."""
    values, inverse = torch.unique(index, sorted=True, return_inverse=True)
    first = torch.full((len(values),), len(index), dtype=torch.long, device=index.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(index), device=index.device), reduce="amin")
    return values, first


class TextVideoRetrieval(ZooModule):
    """Train ``zoo.create_model(model_name, **overrides)`` (X-Pool or mean pooling) on caption-video pairs.

    Args:
        model_name: ``xpool_vit_b32``, ``xpool_vit_b16`` or ``meanpool_vit_b32``.
        clip_weights: local CLIP weights (OpenAI / open_clip / Hugging Face layout) loaded strictly into the
            backbone before training; ``None`` = the model's own initialization.
        lr: learning rate of the new layers (the pooling head); ``clip_lr``: of the CLIP backbone.
        weight_decay: AdamW weight decay (0.2), under the zoo's decay rule.
        warmup_ratio: fraction of the optimizer steps spent in linear warmup.
        max_logit_scale: the clamp of CLIP's ``exp(logit_scale)`` after each step.
        text_chunk, video_chunk: block sizes of the evaluation's similarity matrix.
        dual_softmax_temperature: also report dual-softmax re-ranked metrics (``None`` = off).
        figure_captions: how many test captions the top-5 figure shows.
        **kwargs: :class:`~zoo.training.module.ZooModule`'s (``overrides``, ``init_from``, ``betas``, ...);
            its ``warmup_steps`` is replaced by ``warmup_ratio``.
    """

    monitor = "val/t2v/R@1"
    monitor_mode = "max"

    def __init__(
        self,
        model_name: str = "xpool_vit_b32",
        clip_weights: str | None = None,
        lr: float = 3e-5,
        clip_lr: float = 1e-6,
        weight_decay: float = 0.2,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
        max_logit_scale: float = 100.0,
        text_chunk: int = 512,
        video_chunk: int = 64,
        dual_softmax_temperature: float | None = None,
        figure_captions: int = 4,
        **kwargs: Any,
    ) -> None:
        if clip_lr <= 0 or not 0 <= warmup_ratio < 1 or max_logit_scale <= 1 or min(text_chunk, video_chunk) < 1:
            raise ValueError(
                f"TextVideoRetrieval: need clip_lr > 0, warmup_ratio in [0, 1), max_logit_scale > 1 and chunks >= 1; got "
                f"{clip_lr}, {warmup_ratio}, {max_logit_scale}, {text_chunk}, {video_chunk}"
            )
        if dual_softmax_temperature is not None and dual_softmax_temperature <= 0:
            raise ValueError(f"TextVideoRetrieval: dual_softmax_temperature must be > 0, got {dual_softmax_temperature}")
        if clip_weights and kwargs.get("init_from"):
            raise ValueError("TextVideoRetrieval: give clip_weights or init_from, not both (init_from would overwrite them)")
        super().__init__(model_name, lr=lr, weight_decay=weight_decay, min_lr_ratio=min_lr_ratio, **kwargs)
        if clip_weights:
            from .models.xpool import load_clip_weights

            load_clip_weights(self.model, clip_weights)
        self.clip_lr, self.warmup_ratio = clip_lr, warmup_ratio
        self.max_log_scale = math.log(max_logit_scale)
        self.text_chunk, self.video_chunk = text_chunk, video_chunk
        self.dual_softmax_temperature, self.figure_captions = dual_softmax_temperature, figure_captions
        self._results: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ setup
    def check_data(self, dm: Any) -> None:
        cfg = self.model.config
        if getattr(dm, "image_size", cfg.image_size) != cfg.image_size:
            raise ValueError(
                f"TextVideoRetrieval: the data's image_size {dm.image_size} differs from the model's {cfg.image_size}; "
                f"set --data.init_args.image_size {cfg.image_size}"
            )
        if getattr(dm, "context_length", 0) > cfg.context_length:
            raise ValueError(
                f"TextVideoRetrieval: the data's context_length {dm.context_length} exceeds the model's "
                f"{cfg.context_length}; set --data.init_args.context_length {cfg.context_length}"
            )

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {"embeddings": RetrievalEmbeddings()}

    def configure_callbacks(self) -> list[Callback]:
        return [RetrievalFigure(self.figure_captions)] if self.figure_captions > 0 else []

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.model(batch["tokens"], batch["frames"])
        sim, scale = out["similarity"], out["logit_scale"]  # (B, B), ()
        loss = info_nce(sim, scale, batch["text_video"])
        return loss, {"logit_scale": scale.detach()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(max=self.max_log_scale)

    def configure_optimizers(self) -> dict[str, Any]:
        skip = no_weight_decay_names(self.model)
        groups = []
        for in_clip, lr in ((True, self.clip_lr), (False, self.optim.lr)):
            for decay in (True, False):
                params = [
                    p for n, p in self.model.named_parameters()
                    if p.requires_grad and n.startswith("clip.") == in_clip and (n not in skip) == decay
                ]
                if params:
                    groups.append({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": self.optim.weight_decay if decay else 0.0})
        opt = torch.optim.AdamW(groups, betas=tuple(self.optim.betas))
        steps = total_steps(self)
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, steps, int(self.warmup_ratio * steps), self.optim.min_lr_ratio)}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batch: dict[str, Any], split: str) -> dict[str, Any]:
        text = self.model.encode_text(batch["tokens"])  # (T, D)
        frames = self.model.encode_frames(batch["frames"])  # (B, F, D)
        self.metrics[split]["embeddings"].update(text, frames, batch["text_video"], batch["video_index"])
        return {"video_index": batch["video_index"]}

    @torch.no_grad()
    def retrieval_results(self, split: str) -> dict[str, Any]:
        """This epoch's ``{"text", "frames", "video_of_text", "similarity", "metrics"}`` of ``split``,
        computed once (every process calls it: the embeddings are gathered)."""
        if split not in self._results:
            text, frames, video_of_text = self.metrics[split]["embeddings"].compute()
            sim = chunked_similarity(
                text, frames, self.model.similarity, text_chunk=self.text_chunk, video_chunk=self.video_chunk
            )  # (T, V)
            metrics = retrieval_metrics(sim, video_of_text.cpu())
            if self.dual_softmax_temperature is not None:
                t = self.dual_softmax_temperature
                metrics["dsl_t2v"] = retrieval_metrics(dual_softmax(sim, t, dim=0), video_of_text.cpu())["t2v"]
                metrics["dsl_v2t"] = retrieval_metrics(dual_softmax(sim, t, dim=1), video_of_text.cpu())["v2t"]
            self._results[split] = {
                "text": text, "frames": frames, "video_of_text": video_of_text, "similarity": sim, "metrics": metrics,
            }
        return self._results[split]

    def _log_retrieval(self, split: str) -> None:
        store = self.metrics[split]["embeddings"]
        if store.update_count:
            for direction, values in self.retrieval_results(split)["metrics"].items():
                for name, value in values.items():
                    key = f"{split}/{direction}/{name}"
                    self.log(key, value, prog_bar=key == self.monitor, sync_dist=False)
        store.reset()
        self._results.pop(split, None)

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Embeddings for retrieval elsewhere: ``text (T, D)``, ``frames (B, F, D)`` and their indices."""
        return {
            "text": self.model.encode_text(batch["tokens"]), "frames": self.model.encode_frames(batch["frames"]),
            "video_of_text": batch["video_index"][batch["text_video"]], "video_index": batch["video_index"],
        }
