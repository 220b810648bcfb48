"""``PoseLifter``: any registered 2-D -> 3-D lifting network trained on windows of keypoints.

- loss: MPJPE of the centre frame (metres), plus ``velocity_weight`` times the velocity error
  against the window one frame earlier (the temporal-consistency term of the papers; off by default);
- evaluation (``val`` and ``test``): MPJPE, P-MPJPE, N-MPJPE and MPJVE in millimetres, each averaged
  over the frames of an action and then over the actions (:class:`~zoo.vision.pose.metrics.PerActionError`),
  with the prediction averaged with the one for the mirrored input (``test_flip``);
- optimizer: :class:`~zoo.training.module.ZooModule`'s AdamW and decay rule, with an exponential lr
  decay (``lr_decay`` every ``lr_decay_steps`` optimizer steps, after linear warmup) in place of the
  cosine, as the lifting papers train;
- after ``test``: ``pose_samples.png`` and ``per_action_error.png`` (callbacks of
  :mod:`zoo.vision.pose.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import Metric

from zoo.training.module import ZooModule

from .data import H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT, flip_pose
from .figures import PerActionErrorFigure, PoseSamplesFigure
from .metrics import PerActionError, mpjpe_per_frame, n_mpjpe_per_frame, p_mpjpe_per_frame

__all__ = ["PoseLifter", "METRICS"]

METRICS: tuple[str, ...] = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")
_PER_FRAME = {"mpjpe": mpjpe_per_frame, "p_mpjpe": p_mpjpe_per_frame, "n_mpjpe": n_mpjpe_per_frame}


class PoseLifter(ZooModule):
    """Train ``zoo.create_model(model_name, **overrides)`` (``(B, F, J, 2) -> (B, J, 3)``) on pose windows.

    Args:
        model_name: a registered lifting network, e.g. ``convformer_243`` or ``videopose3d_243``.
        num_actions: how many action classes the per-action averages keep (>= the data's).
        velocity_weight: weight of the velocity-error term of the loss (0 = MPJPE only).
        test_flip: average every evaluated prediction with the mirrored input's (flipped back).
        lr_decay, lr_decay_steps: multiply the lr by ``lr_decay`` every ``lr_decay_steps`` steps.
        num_samples: how many test windows the skeleton figure draws.
        lr, weight_decay, warmup_steps, ...: :class:`~zoo.training.module.ZooModule`'s.
    """

    monitor = "val/mpjpe"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "convformer_27",
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        num_actions: int = 15,
        velocity_weight: float = 0.0,
        test_flip: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        lr_decay: float = 0.98,
        lr_decay_steps: int = 1000,
        num_samples: int = 4,
    ) -> None:
        if num_actions < 1 or velocity_weight < 0 or not 0 < lr_decay <= 1 or lr_decay_steps < 1:
            raise ValueError(
                "PoseLifter: need num_actions >= 1, velocity_weight >= 0, 0 < lr_decay <= 1 and lr_decay_steps >= 1; got "
                f"{num_actions}, {velocity_weight}, {lr_decay}, {lr_decay_steps}"
            )
        self.num_actions = num_actions
        super().__init__(model_name, overrides, init_from, lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps)
        self.velocity_weight, self.test_flip = velocity_weight, test_flip
        self.lr_decay, self.lr_decay_steps, self.num_samples = lr_decay, lr_decay_steps, num_samples
        self.symmetry: tuple[Sequence[int], Sequence[int]] = (H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {name: PerActionError(self.num_actions, scale=1000.0) for name in METRICS}  # metres -> mm

    def configure_callbacks(self) -> list[Callback]:
        return [PoseSamplesFigure(self.num_samples), PerActionErrorFigure()]

    def check_data(self, datamodule: Any) -> None:
        """Refuse windows of another length than the model's and more actions than ``num_actions``;
        take the data's left/right keypoint symmetry for the test-time flip."""
        frames = getattr(self.model.config, "num_frames", None)
        if getattr(datamodule, "receptive_field", frames) != frames:
            raise ValueError(
                f"PoseLifter: {self.hparams.model_name} takes {frames} frames but the data windows have "
                f"{datamodule.receptive_field}; set --data.init_args.receptive_field {frames}"
            )
        datamodule.setup()  # idempotent; the action names and symmetry come from the files
        names = getattr(datamodule, "action_names", [])
        if len(names) > self.num_actions:
            raise ValueError(
                f"PoseLifter: the data has {len(names)} actions ({names}) but num_actions="
                f"{self.num_actions}; set --model.init_args.num_actions {len(names)}"
            )
        self.symmetry = getattr(datamodule, "keypoints_symmetry", self.symmetry)

    def configure_optimizers(self) -> dict[str, Any]:
        out = super().configure_optimizers()  # AdamW over the zoo's decay groups
        warmup, decay, every = self.optim.warmup_steps, self.lr_decay, self.lr_decay_steps

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            return ramp * decay ** (step / every)

        scheduler = torch.optim.lr_scheduler.LambdaLR(out["optimizer"], factor)
        return {"optimizer": out["optimizer"], "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ loss and evaluation
    def _predict(self, network: torch.nn.Module, inputs: Tensor, flip: bool) -> Tensor:
        pred = network(inputs)  # (B, J, 3)
        if flip:
            mirrored = network(flip_pose(inputs, *self.symmetry))  # (B, J, 3)
            pred = (pred + flip_pose(mirrored, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)) / 2
        return pred

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        target = batch["target"]  # (B, J, 3)
        if self.velocity_weight > 0:
            both = self.model(torch.cat([batch["inputs"], batch["prev_inputs"]]))  # (2B, J, 3)
            pred, prev = both.chunk(2)
            velocity = mpjpe_per_frame(pred - prev, target - batch["prev_target"]).mean()
        else:
            pred, velocity = self.model(batch["inputs"]), target.new_zeros(())
        loss_mpjpe = mpjpe_per_frame(pred, target).mean()
        return loss_mpjpe + self.velocity_weight * velocity, {"mpjpe_mm": 1000 * loss_mpjpe.detach()}

    def evaluate(self, batch: dict[str, Tensor], split: str) -> dict[str, Tensor]:
        target, actions = batch["target"], batch["action"]  # (B, J, 3), (B,)
        both = self._predict(self.eval_network(), torch.cat([batch["inputs"], batch["prev_inputs"]]), self.test_flip)
        pred, prev = both.chunk(2)  # (B, J, 3) each
        errors = {name: fn(pred, target) for name, fn in _PER_FRAME.items()}  # (B,) metres
        errors["mpjve"] = mpjpe_per_frame(pred - prev, target - batch["prev_target"])
        for name, value in errors.items():
            self.metrics[split][name].update(value, actions)
        centre = batch["inputs"].shape[1] // 2
        return {"inputs": batch["inputs"][:, centre], "pred": pred, "target": target, "action": actions,
                "errors": {k: 1000 * v for k, v in errors.items()}}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._predict(self.eval_network(), batch["inputs"], self.test_flip)
