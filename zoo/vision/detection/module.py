"""``PlainDETRDetector``: a registered DETR-style detector trained with Plain-DETR's recipe on COCO-format data.

- loss: :class:`~zoo.vision.detection.losses.SetCriterion`: Hungarian matching on class / L1 / GIoU
  costs (2, 5, 2), sigmoid focal (alpha 0.25), L1 and GIoU losses (2, 5, 2) on the last decoder layer,
  every earlier layer, the two-stage proposals and the one-to-many group (targets repeated
  ``k_one2many`` times) the model returns in training;
- optimizer, as the official ``get_param_dict``: AdamW, ``lr`` for the detector and ``lr_backbone`` for
  the parameters under ``backbone_prefix``; weight decay except on the zoo's no-decay set (norms,
  biases, position tables) and on every name holding one of :data:`NO_DECAY_KEYWORDS` (the official
  ``wd_norm_names`` with ``wd_norm_mult 0``: the BoxRPB MLPs ``cpb_mlp*`` included); linear warmup
  over ``warmup_steps``, then the lr times ``lr_drop_factor`` after ``lr_drop_fraction`` of the steps
  (11 of 12 epochs); gradient clipping 0.1 through the Trainer (``gradient_clip_val`` in the configs);
- evaluation (``val`` and ``test``): the official top-``topk`` post-processing and COCOeval's twelve
  numbers, logged as ``<split>/AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1`` ... (see
  :mod:`~zoo.vision.detection.metrics`); the detections are written as ``<split>_results.json``
  (COCO results format) in the run directory;
- after ``test``: ``detections.png`` and ``cross_attention.png`` (:mod:`~zoo.vision.detection.figures`).
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import Metric

from zoo.training.module import ClassHeadModule
from zoo.training.optim import no_weight_decay_names, total_steps

from .figures import CocoResultsWriter, CrossAttentionFigure, DetectionsFigure
from .losses import SetCriterion
from .matcher import HungarianMatcher
from .metrics import COCO_STATS, CocoMeanAP, postprocess

__all__ = ["NO_DECAY_KEYWORDS", "PlainDETRDetector"]

#: the official ``--wd_norm_names``: parameters whose name holds one of these get no weight decay
NO_DECAY_KEYWORDS: tuple[str, ...] = (
    "norm", "bias", "rpb_mlp", "cpb_mlp", "logit_scale", "relative_position_bias_table", "level_embed",
    "reference_points", "sampling_offsets", "rel_pos",
)


class PlainDETRDetector(ClassHeadModule):
    """Train ``zoo.create_model(model_name, **overrides)`` (``model(images, pad_mask) -> dict``) on COCO boxes.

    Args:
        model_name: a registered detector, e.g. ``plain_detr_swinv2_s_boxrpb`` or ``plain_detr_demo``.
        num_classes: the detector's logits (COCO: 91 = the largest category id + 1); None = the model's.
        lr, lr_backbone: learning rates of the detector and of the parameters under ``backbone_prefix``.
        weight_decay, betas: AdamW's.
        warmup_steps: linear warmup in optimizer steps; lr_drop_fraction, lr_drop_factor: the step drop.
        cost_class, cost_bbox, cost_giou: the matching costs; weight_ce, weight_bbox, weight_giou: the loss weights.
        focal_alpha: the focal loss's and the class cost's alpha.
        k_one2many, lambda_one2many: hybrid matching's target repeats and group weight.
        topk: detections kept per image for evaluation.
        figure_images: how many test images ``detections.png`` draws; score_threshold: the drawn boxes' least score.
    """

    monitor = "val/AP"
    exact_class_count = False  # COCO ids are sparse: 91 logits cover 80 categories
    monitor_mode = "max"

    def __init__(
        self,
        model_name: str = "plain_detr_demo",
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        num_classes: int | None = None,
        lr: float = 2e-4,
        lr_backbone: float = 2e-5,
        backbone_prefix: str = "backbone.",
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1000,
        lr_drop_fraction: float = 11 / 12,
        lr_drop_factor: float = 0.1,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        weight_ce: float = 2.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        focal_alpha: float = 0.25,
        k_one2many: int = 6,
        lambda_one2many: float = 1.0,
        topk: int = 100,
        figure_images: int = 4,
        score_threshold: float = 0.3,
    ) -> None:
        if lr_backbone < 0 or not 0 < lr_drop_fraction <= 1 or not 0 < lr_drop_factor <= 1 or topk < 1:
            raise ValueError(
                "PlainDETRDetector: need lr_backbone >= 0, 0 < lr_drop_fraction <= 1, 0 < lr_drop_factor <= 1 and topk >= 1; "
                f"got {lr_backbone}, {lr_drop_fraction}, {lr_drop_factor}, {topk}"
            )
        super().__init__(model_name, overrides, init_from, num_classes=num_classes, lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps)
        self.lr_backbone, self.backbone_prefix = lr_backbone, backbone_prefix
        self.lr_drop_fraction, self.lr_drop_factor = lr_drop_fraction, lr_drop_factor
        matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou, alpha=focal_alpha)
        self.criterion = SetCriterion(matcher, weight_ce, weight_bbox, weight_giou, alpha=focal_alpha,
                                      k_one2many=k_one2many, lambda_one2many=lambda_one2many)
        self.topk, self.figure_images, self.score_threshold = topk, figure_images, score_threshold

    # ------------------------------------------------------------------ configuration
    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {"AP": CocoMeanAP()}  # computes all twelve COCO numbers; derived_metrics names them

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        stats = values["AP"]  # (12,)
        return {name: stats[i] for i, name in enumerate(COCO_STATS)}

    def configure_callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = [CocoResultsWriter(), CrossAttentionFigure()]
        if self.figure_images > 0:
            callbacks.append(DetectionsFigure(self.figure_images, self.score_threshold))
        return callbacks

    def check_data(self, datamodule: Any) -> None:
        """Refuse data whose category ids do not fit the detector's logits (``num_classes`` = largest id + 1)."""
        datamodule.setup()  # idempotent: the categories come from the json files
        super().check_data(datamodule)

    def param_groups(self) -> list[dict[str, Any]]:
        """The official four groups: (detector | backbone) x (decay | no decay); empty ones left out."""
        skip = no_weight_decay_names(self.model)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not any(n.startswith(self.backbone_prefix) for n, _ in named):
            raise ValueError(
                f"PlainDETRDetector: no parameter of {self.hparams.model_name} is under backbone_prefix "
                f"{self.backbone_prefix!r} (it has {sorted({n.split('.')[0] for n, _ in named})})"
            )
        groups = []
        for backbone, lr in ((False, self.optim.lr), (True, self.lr_backbone)):
            for decay in (True, False):
                params = [
                    p for n, p in named
                    if n.startswith(self.backbone_prefix) == backbone
                    and (n not in skip and not any(k in n for k in NO_DECAY_KEYWORDS)) == decay
                ]
                if params:
                    groups.append({"params": params, "lr": lr, "initial_lr": lr,
                                   "weight_decay": self.optim.weight_decay if decay else 0.0})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.param_groups(), betas=tuple(self.optim.betas))
        warmup, drop_at, factor = self.optim.warmup_steps, int(self.lr_drop_fraction * total_steps(self)), self.lr_drop_factor

        def schedule(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            return ramp * (factor if step >= drop_at else 1.0)

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ loss and evaluation
    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        images = batch["images"].to(next(self.model.parameters()).dtype)
        outputs = self.model(images, batch["pad_mask"])
        total, losses = self.criterion(outputs, batch["targets"])
        shown = {k: v.detach() for k, v in losses.items() if k in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_enc")}
        return total, shown

    @torch.no_grad()
    def detect(self, images: Tensor, pad_mask: Tensor | None, sizes: Tensor) -> list[dict[str, Tensor]]:
        """Top-``topk`` detections per image in the pixels of ``sizes (B, 2)`` ``(h, w)``."""
        network = self.eval_network()
        out = network(images.to(next(network.parameters()).dtype), pad_mask)
        return postprocess(out["pred_logits"], out["pred_boxes"], sizes, self.topk)

    def evaluate(self, batch: dict[str, Any], split: str) -> dict[str, Any]:
        targets = batch["targets"]
        orig = torch.stack([t["orig_size"] for t in targets]).to(batch["images"].device)  # (B, 2)
        detections = self.detect(batch["images"], batch["pad_mask"], orig)
        self.metrics[split]["AP"].update(detections, targets)
        return {"images": batch["images"], "pad_mask": batch["pad_mask"], "targets": targets, "detections": detections}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Detections in original-image pixels, with each target's ``image_id``."""
        orig = torch.stack([t["orig_size"] for t in batch["targets"]]).to(batch["images"].device)
        dets = self.detect(batch["images"], batch["pad_mask"], orig)
        return [{**d, "image_id": t["image_id"]} for d, t in zip(dets, batch["targets"])]
