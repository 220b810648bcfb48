"""Train, validate, test or predict any zoo task with the one ``ZooCLI``.

    python -m zoo.train fit --config configs/<domain>/<task>/<config>.yaml
    python -m zoo.train test --config ... --ckpt_path runs/<name>/version_0/checkpoints/last.ckpt

``python -m zoo.<domain>.train`` is the same command. The module and datamodule are named by class
path in the config (``model.class_path``, ``data.class_path``); see :class:`zoo.training.cli.ZooCLI`.
"""

from __future__ import annotations

from pytorch_lightning.cli import ArgsType

from zoo.training.cli import ZooCLI

__all__ = ["cli_main"]


def cli_main(args: ArgsType = None) -> ZooCLI:
    import pytorch_lightning as pl

    return ZooCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args)


if __name__ == "__main__":
    cli_main()
