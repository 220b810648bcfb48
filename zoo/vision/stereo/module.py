"""``StereoMatcher``: any registered stereo network trained on rectified pairs with ground-truth disparity.

The official MatchStereo release has no training code and no loss; what is here is our choice:

- **sequence loss** (RAFT-Stereo's): ``sum_i gamma^(N-1-i) * mean_valid |d_i - d_gt|`` over every
  full-resolution disparity the network outputs (``out["disparities"]``, coarse to fine: the initial
  correlation estimate and every refinement step), ``gamma = 0.9``, so the last estimate weighs most
  and every step gets a direct gradient;
- **occlusion term**: ``occlusion_weight`` times the binary cross-entropy between each predicted occlusion
  map (``out["occlusion"]``, probabilities in [0, 1], 1 = occluded) and the ground-truth occlusion, on
  pixels where it is known, averaged over the maps. The ground-truth occlusion is the dataset's own
  mask where it ships one (``noc``: KITTI ``disp_noc``, Middlebury / ETH3D ``mask0nocc``), otherwise it is
  derived from the left ground truth by the left-right test the network's own mask makes: every valid
  pixel is forward-warped to ``round(x - d)`` with a z-buffer, and a pixel is occluded when a pixel with a
  larger disparity (by > ``occlusion_margin`` px) lands on the same right-image pixel, or when ``x - d``
  leaves the image (:func:`occlusion_target`). The term teaches the network's left-right consistency
  mask to mean "occluded" (the mask gates the decoder's attention), and is zero-gradient when a network
  computes the mask without gradient (it is still logged as ``train/occlusion_bce``);
- ``max_disp``: ground truth at or above it is ignored by the loss (as the data's own filter);
- optimizer: AdamW over the zoo's decay groups with a one-cycle schedule (linear warmup over
  ``pct_start`` of the steps to ``lr``, linear decay to ``lr / (div_factor * final_div_factor)``), as
  RAFT-Stereo trains;
- evaluation (``val`` and ``test``): EPE, D1 (KITTI: > 3 px and > 5 %), D1 > 3 px (RAFT-Stereo's), bad-1/2/3,
  each averaged over images, the fractions in percent; on valid pixels, or valid and non-occluded ones where
  the data ship a mask and ``eval_noc`` is set. Each extra evaluation set of the datamodule (the Motorcycle
  pair) is logged under its name: ``val/motorcycle_epe``, ...; images are padded (edge-replicated, right
  and bottom) to multiples of ``pad_multiple`` and the prediction cropped back;
- after ``test``: ``stereo_samples.png`` (:class:`~zoo.vision.stereo.figures.StereoSamplesFigure`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torchmetrics import Metric

from zoo.training.module import ZooModule
from zoo.training.optim import total_steps

from .data import EXTRA_EVAL_SETS
from .figures import StereoSamplesFigure
from .metrics import METRICS, StereoErrors, per_image_errors

__all__ = ["StereoMatcher", "sequence_loss", "occlusion_target", "occlusion_loss", "pad_to_multiple", "infer_disparity"]


def sequence_loss(disparities: list[Tensor], gt: Tensor, valid: Tensor, gamma: float = 0.9) -> tuple[Tensor, list[Tensor]]:
    """``(sum_i gamma^(N-1-i) L1_i, [L1_i])``: the L1 of each prediction ``(B, 1, H, W)`` on ``valid`` pixels."""
    if not disparities:
        raise ValueError("sequence_loss: the network returned no disparity predictions")
    if not valid.any():
        zero = sum(d.sum() for d in disparities) * 0.0  # keeps the graph: a batch without ground truth trains nothing
        return zero, [zero.detach() for _ in disparities]
    n = len(disparities)
    terms = []
    for d in disparities:
        if d.shape != gt.shape:
            raise ValueError(f"sequence_loss: prediction {tuple(d.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        terms.append((d - gt).abs()[valid].mean())
    total = sum(gamma ** (n - 1 - i) * t for i, t in enumerate(terms))
    return total, [t.detach() for t in terms]


@torch.no_grad()
def occlusion_target(disparity: Tensor, valid: Tensor, noc: Tensor | None = None, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(occluded, known)``, both bool ``(B, 1, H, W)``: the dataset's mask where given (``known = valid``,
    ``occluded = valid & ~noc``), else the z-buffer left-right test on the left ground truth (see the module
    docstring): ``known = valid``."""
    if noc is not None:
        return valid & ~noc, valid
    b, _, h, w = disparity.shape
    xs = torch.arange(w, device=disparity.device, dtype=disparity.dtype).view(1, 1, 1, w)
    target = torch.round(xs - disparity)  # (B, 1, H, W) right-image column
    inside = (target >= 0) & (target <= w - 1)
    index = target.clamp(0, w - 1).long()
    zbuf = torch.full_like(disparity, float("-inf"))
    zbuf.scatter_reduce_(-1, index, torch.where(valid & inside, disparity, torch.full_like(disparity, float("-inf"))), "amax")
    seen = zbuf.gather(-1, index)  # (B, 1, H, W) the nearest disparity landing where each pixel lands
    occluded = valid & (~inside | (seen > disparity + margin))
    return occluded, valid


def occlusion_loss(occlusion: list[Tensor], target: Tensor, known: Tensor) -> Tensor:
    """Mean over the maps of the binary cross-entropy of each ``(B, 1, H, W)`` probability map on ``known``."""
    if not occlusion or not known.any():
        return target.new_zeros((), dtype=torch.float32)
    losses = []
    for p in occlusion:
        if p.shape != target.shape:
            raise ValueError(f"occlusion_loss: map {tuple(p.shape)} and target {tuple(target.shape)} differ in shape")
        p = p.float().clamp(1e-6, 1 - 1e-6)
        losses.append(F.binary_cross_entropy(p[known], target[known].float()))
    return torch.stack(losses).mean()


def pad_to_multiple(images: list[Tensor], multiple: int) -> tuple[list[Tensor], tuple[int, int]]:
    """Edge-replicate ``(B, C, H, W)`` images on the right and bottom to multiples of ``multiple``."""
    h, w = images[0].shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, (h, w)
    return [F.pad(x, (0, pw, 0, ph), mode="replicate") for x in images], (h, w)


def infer_disparity(network: nn.Module, left: Tensor, right: Tensor, multiple: int = 32) -> dict[str, Any]:
    """The network's output dict for images of any size (padded, then every map cropped back)."""
    (left, right), (h, w) = pad_to_multiple([left, right], multiple)
    out = network(left, right)
    if not isinstance(out, dict) or "disparity" not in out:
        raise TypeError(f"{type(network).__name__} must return a dict with 'disparity' (and 'disparities', 'occlusion')")

    def crop(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value[..., :h, :w]
        if isinstance(value, (list, tuple)):
            return [crop(v) for v in value]
        return value

    return {k: crop(v) for k, v in out.items()}


class StereoMatcher(ZooModule):
    """Train ``zoo.create_model(model_name, **overrides)`` (``(left, right) -> {"disparity", ...}``) on stereo pairs.

    Args:
        model_name: a registered stereo network, e.g. ``matchstereo_t`` or the tiny ``matchstereo_demo``.
        loss_gamma: the sequence loss's weight decay toward early predictions.
        occlusion_weight: weight of the occlusion cross-entropy (0 = off).
        occlusion_margin: disparity margin (px) of the z-buffer occlusion test.
        max_disp: ground truth at or above it is ignored by the loss.
        extra_eval: the datamodule's extra evaluation sets (must match it; ``()`` for none).
        eval_noc: score only non-occluded pixels where the data ship a mask.
        pad_multiple: evaluated images are padded to multiples of it (MatchStereo: 32).
        pct_start, div_factor, final_div_factor: the one-cycle schedule's (torch ``OneCycleLR``).
        num_samples: pairs per evaluation set in the test figure.
        lr, weight_decay, betas: AdamW's.
    """

    monitor = "val/epe"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "matchstereo_demo",
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        loss_gamma: float = 0.9,
        occlusion_weight: float = 0.5,
        occlusion_margin: float = 1.0,
        max_disp: float = 192.0,
        extra_eval: tuple[str, ...] = ("motorcycle",),
        eval_noc: bool = False,
        pad_multiple: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        pct_start: float = 0.05,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        num_samples: int = 2,
    ) -> None:
        unknown = [name for name in extra_eval if name not in EXTRA_EVAL_SETS]
        if not 0 < loss_gamma <= 1 or occlusion_weight < 0 or max_disp <= 0 or pad_multiple < 1 or unknown:
            raise ValueError(
                "StereoMatcher: need 0 < loss_gamma <= 1, occlusion_weight >= 0, max_disp > 0, pad_multiple >= 1 and "
                f"extra_eval within {EXTRA_EVAL_SETS}; got {loss_gamma}, {occlusion_weight}, {max_disp}, {pad_multiple}, {extra_eval}"
            )
        if not 0 < pct_start < 1 or div_factor <= 0 or final_div_factor <= 0:
            raise ValueError(f"StereoMatcher: need 0 < pct_start < 1 and positive div factors; got {pct_start}, {div_factor}, {final_div_factor}")
        self.extra_eval = tuple(extra_eval)
        super().__init__(model_name, overrides, init_from, lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=0)
        self.loss_gamma, self.occlusion_weight, self.occlusion_margin = loss_gamma, occlusion_weight, occlusion_margin
        self.max_disp, self.eval_noc, self.pad_multiple = max_disp, eval_noc, pad_multiple
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.num_samples = num_samples

    @property
    def eval_sets(self) -> tuple[str, ...]:
        """The evaluation sets in loader order: ``""`` (the split's own pairs), then ``extra_eval``."""
        return ("",) + self.extra_eval

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {
            f"{prefix}{name}": StereoErrors(scale=1.0 if name == "epe" else 100.0)
            for prefix in (f"{s}_" if s else "" for s in self.eval_sets)
            for name in METRICS
        }

    def configure_callbacks(self) -> list[Callback]:
        return [StereoSamplesFigure(self.num_samples)]

    def check_data(self, datamodule: Any) -> None:
        """Refuse a datamodule whose extra evaluation sets differ from ``extra_eval`` (the metric names)."""
        theirs = tuple(getattr(datamodule, "extra_eval", ()))
        if theirs != self.extra_eval:
            raise ValueError(
                f"StereoMatcher: the data score extra sets {theirs} but the module's extra_eval is {self.extra_eval}; "
                f"set --model.init_args.extra_eval {list(theirs)} (or the data's extra_eval to match)"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = super().configure_optimizers()["optimizer"]  # AdamW over the zoo's decay groups
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps(self) + 1,
            pct_start=self.pct_start, div_factor=self.div_factor, final_div_factor=self.final_div_factor,
            anneal_strategy="linear", cycle_momentum=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ loss and evaluation
    def losses(self, out: dict[str, Any], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a network output dict on a batch, and the values to log."""
        gt = batch["disparity"]
        valid = batch["valid"] & (gt < self.max_disp)
        seq, per_step = sequence_loss(list(out["disparities"]), gt, valid, self.loss_gamma)
        occluded, known = occlusion_target(gt, valid, batch.get("noc"), self.occlusion_margin)
        occ = occlusion_loss(list(out.get("occlusion") or []), occluded, known)
        logs = {"sequence_l1": seq.detach(), "occlusion_bce": occ.detach(), "epe_last": per_step[-1],
                "occluded_fraction": occluded[known].float().mean() if known.any() else occ.new_zeros(())}
        return seq + self.occlusion_weight * occ, logs

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = infer_disparity(self.model, batch["left"], batch["right"], self.pad_multiple)
        return self.losses(out, batch)

    def evaluate(self, batch: dict[str, Tensor], split: str, dataloader_idx: int = 0) -> dict[str, Any]:
        if not 0 <= dataloader_idx < len(self.eval_sets):
            raise ValueError(f"StereoMatcher: evaluation loader {dataloader_idx} but only sets {self.eval_sets}")
        name = self.eval_sets[dataloader_idx]
        pred = infer_disparity(self.eval_network(), batch["left"], batch["right"], self.pad_multiple)["disparity"]
        noc = batch.get("noc") if self.eval_noc else None
        prefix = f"{name}_" if name else ""
        for metric, values in per_image_errors(pred, batch["disparity"], batch["valid"], noc).items():
            self.metrics[split][prefix + metric].update(values)
        return {"set": name or "held-out", "left": batch["left"], "pred": pred, "gt": batch["disparity"], "valid": batch["valid"]}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.evaluate(batch, "test", dataloader_idx)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return infer_disparity(self.eval_network(), batch["left"], batch["right"], self.pad_multiple)["disparity"]
