"""``ZooCLI``: the one LightningCLI of the zoo, run by ``python -m zoo.train`` (and its aliases
``python -m zoo.<domain>.train``); see :mod:`zoo.train`."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from .callbacks import FiniteCheck, ResumeState, ZooCheckpoint

__all__ = ["ZooCLI"]

# Rank 0 publishes its run version here so DDP worker processes (which Lightning launches with
# the same command line and LOCAL_RANK > 0) log under the same ``version_N`` instead of racing
# for the next free one.
_VERSION_ENV = "ZOO_RUN_VERSION"


def _next_version(experiment_dir: Path) -> int:
    versions = [
        int(m.group(1))
        for p in (experiment_dir.iterdir() if experiment_dir.is_dir() else [])
        if p.is_dir() and (m := re.fullmatch(r"version_(\d+)", p.name))
    ]
    return max(versions, default=-1) + 1


def _run_version(experiment_dir: Path) -> int:
    """The run's ``version_N``, reserved atomically: the directory is created with ``exist_ok=False``,
    so of several runs started at once each gets its own (a lost race moves on to the next number)."""
    worker = int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0
    if worker and os.environ.get(_VERSION_ENV, "").isdigit():
        return int(os.environ[_VERSION_ENV])
    experiment_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(experiment_dir)
    while True:
        try:
            (experiment_dir / f"version_{version}").mkdir()
            break
        except FileExistsError:
            version += 1
    os.environ[_VERSION_ENV] = str(version)
    return version


#: where ``--ckpt_path`` hyper-parameters may point ``_class_path``: the zoo's own classes, plus the
#: prefixes a user lists in ``$ZOO_ALLOWED_CLASS_PATHS`` (comma-separated)
_ALLOWED_CLASS_PREFIXES = ("zoo.",)


def _allowed_class_path(path: str) -> bool:
    extra = tuple(p.strip() for p in os.environ.get("ZOO_ALLOWED_CLASS_PATHS", "").split(",") if p.strip())
    return isinstance(path, str) and path.startswith(_ALLOWED_CLASS_PREFIXES + extra)


def _install_sigterm_as_interrupt() -> Any:
    """SIGTERM (a scheduler, ``kill``) ends the run like Ctrl-C: Lightning's graceful shutdown, during
    which :class:`~zoo.training.callbacks.ZooCheckpoint` writes ``last.ckpt``."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


class _RunCSVLogger(CSVLogger):
    """CSV metrics in ``<run dir>/csv/``: CSVLogger warns about and clears a non-empty log dir, and the
    run dir already holds ``config.yaml`` and the TensorBoard files when it starts."""

    @property
    def log_dir(self) -> str:
        return os.path.join(super().log_dir, "csv")


class ZooCLI(LightningCLI):
    """LightningCLI with the zoo's defaults; one call is a domain's whole ``train.py``.

    What it adds to LightningCLI:

    - ``trainer.default_root_dir`` defaults to ``runs``; unless ``--trainer.logger`` is given, logs go
      to ``runs/<experiment>/version_N/`` (TensorBoard event files, ``config.yaml``,
      ``hparams.yaml``, ``checkpoints/``) and ``runs/<experiment>/version_N/csv/metrics.csv``.
      ``<experiment>`` is ``--name`` or the LightningModule's class name.
    - a ``ModelCheckpoint`` saving ``last.ckpt`` plus the best checkpoint on the module's
      ``monitor`` attribute (``monitor_mode`` "min"/"max", default "min") when it defines one, else
      the latest; skipped when you pass your own ``ModelCheckpoint`` or disable checkpointing.
    - a ``LearningRateMonitor`` whenever a logger is active; the progress bar is on.
    - ``--seed_everything`` defaults to 1234; ``config.yaml`` is overwritten on re-runs.
    - no automatic optimizer arguments: every module defines ``configure_optimizers`` itself.

    Examples (``<domain>`` e.g. ``music``)::

        python -m zoo.<domain>.train fit --config configs/<domain>/<task>/<config>.yaml
        python -m zoo.<domain>.train fit --config configs/<domain>/<task>/<config>.yaml --print_config
        python -m zoo.<domain>.train fit --config ... --trainer.max_steps 2000 --name my_run
        # resume training (weights, optimizer, loops) with Lightning's own --ckpt_path:
        python -m zoo.<domain>.train fit --config ... --ckpt_path runs/<exp>/version_0/checkpoints/last.ckpt
        # fine-tune: load weights only, from a registered name, a pretrained directory,
        # a .safetensors file or a Lightning .ckpt (through zoo.hub.load_weights_into):
        python -m zoo.<domain>.train fit --config ... --model.init_from music_transformer_chorales
        python -m zoo.<domain>.train fit --config ... --model.init_from runs/<exp>/version_0/checkpoints/last.ckpt
        # multi-GPU / CPU DDP through Lightning strategies:
        python -m zoo.<domain>.train fit --config ... --trainer.strategy ddp --trainer.devices 2

    ``--model.init_from`` is an argument of each LightningModule (``init_from: str | None = None``),
    which calls ``zoo.hub.load_weights_into(self.model, init_from)`` in its constructor. Since
    ``--ckpt_path`` re-reads the module's hyper-parameters, a resumed run re-applies ``init_from``
    before the checkpoint overwrites every weight, so its source must still exist.
    """

    def __init__(
        self,
        model_class: type[pl.LightningModule] | None = pl.LightningModule,
        datamodule_class: type[pl.LightningDataModule] | None = pl.LightningDataModule,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[pl.Trainer] = pl.Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = 1234,
        parser_kwargs: dict[str, Any] | None = None,
        subclass_mode_model: bool = True,
        subclass_mode_data: bool = True,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = False,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        super().__init__(
            model_class=model_class,
            datamodule_class=datamodule_class,
            save_config_callback=save_config_callback,
            save_config_kwargs={"overwrite": True, **(save_config_kwargs or {})},
            trainer_class=trainer_class,
            trainer_defaults={"default_root_dir": "runs", "enable_progress_bar": True, **(trainer_defaults or {})},
            seed_everything_default=seed_everything_default,
            parser_kwargs=parser_kwargs,
            subclass_mode_model=subclass_mode_model,
            subclass_mode_data=subclass_mode_data,
            args=args,
            run=run,
            auto_configure_optimizers=auto_configure_optimizers,
            load_from_checkpoint_support=load_from_checkpoint_support,
        )

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` hyper-parameters name the module class (``_class_path``); only the zoo's own
        classes (and ``$ZOO_ALLOWED_CLASS_PATHS``) are imported from there, so a data file cannot make
        the CLI import arbitrary code."""
        subcommand = self.config.get("subcommand") if hasattr(self, "config") else None
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            from zoo.hub.checkpoints import _torch_load

            ckpt = _torch_load(Path(ckpt_path))
            hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
            class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
            if class_path is not None and not _allowed_class_path(class_path):
                raise ValueError(
                    f"--ckpt_path {ckpt_path}: its hyper-parameters name the class {class_path!r}, which is not one "
                    "of the zoo's (zoo.*); importing it could run code from outside the zoo. If you trust it, "
                    "add its module prefix to $ZOO_ALLOWED_CLASS_PATHS"
                )
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        self._previous_sigterm = _install_sigterm_as_interrupt()

    def after_fit(self) -> None:
        if getattr(self, "_previous_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="Experiment name: logs go to <trainer.default_root_dir>/<name>/version_N "
            "(default: the LightningModule's class name).",
        )

    def _experiment_name(self) -> str:
        name = self._get(self.config, "name")
        return name or type(self.model).__name__

    def _default_callbacks(self, trainer_config: dict[str, Any], callbacks: list[Any], logging: bool) -> list[Callback]:
        added: list[Callback] = []
        # fast_dev_run writes nothing, but ModelCheckpoint(save_last=True) still saves last.ckpt on_train_end
        checkpointing = trainer_config.get("enable_checkpointing", True) is not False
        if (
            checkpointing
            and not trainer_config.get("fast_dev_run")
            and not any(isinstance(c, ModelCheckpoint) for c in callbacks)
        ):
            monitor = getattr(self.model, "monitor", None)
            if isinstance(monitor, str) and monitor:
                mode = getattr(self.model, "monitor_mode", "min")
                added.append(
                    ZooCheckpoint(
                        monitor=monitor, mode=mode, save_top_k=1, save_last=True, filename="best-{epoch}-{step}"
                    )
                )
            else:
                added.append(ZooCheckpoint(save_top_k=1, save_last=True))
        if not any(isinstance(c, FiniteCheck) for c in callbacks):
            added.append(FiniteCheck())
        if not any(isinstance(c, ResumeState) for c in callbacks):
            added.append(ResumeState())
        if logging and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            added.append(LearningRateMonitor(logging_interval="step"))
        return added

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        logger = trainer_config.get("logger")
        if (logger is None or logger is True) and not trainer_config.get("fast_dev_run"):
            # fast_dev_run logs nothing (Lightning swaps in a dummy logger): reserve no run directory
            root = Path(trainer_config.get("default_root_dir") or "runs")
            name = self._experiment_name()
            version = _run_version(root / name)
            # TensorBoard first: its version directory is trainer.log_dir (config.yaml, checkpoints/).
            kwargs["logger"] = [
                TensorBoardLogger(save_dir=str(root), name=name, version=version, default_hp_metric=False),
                _RunCSVLogger(save_dir=str(root), name=name, version=version),
            ]
        callbacks = trainer_config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        # callbacks given as their own CLI groups (parser.add_lightning_class_args(Callback, ...)) count too
        configured = callbacks + [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        callbacks += self._default_callbacks(trainer_config, configured, logging=logger is not False)
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)
