"""Train image classifiers with the zoo's LightningCLI.

    python -m zoo.vision.train fit --config configs/vision/digits_demo.yaml
    python -m zoo.vision.train fit --config configs/vision/astroformer_galaxy10.yaml \
        --data.init_args.path /data/Galaxy10_DECals.h5
    python -m zoo.vision.train test --config configs/vision/astroformer_galaxy10.yaml \
        --data.init_args.path /data/Galaxy10_DECals.h5 --ckpt_path runs/astroformer_galaxy10/version_0/checkpoints/last.ckpt

``test`` writes ``confusion_matrix.png`` and ``misclassified.png`` into the run directory. The model is
``zoo.vision.module.ImageClassifier`` (any registered classifier by ``model_name``), the data
``zoo.vision.data.ImageClassificationDataModule`` (ImageFolder, Galaxy10 h5, CIFAR pickles, digits).
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import ArgsType

from zoo.cli import ZooCLI

__all__ = ["cli_main"]


def cli_main(args: ArgsType = None) -> ZooCLI:
    return ZooCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args
    )


if __name__ == "__main__":
    cli_main()
