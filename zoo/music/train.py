"""Train music models with the zoo's LightningCLI.

    python -m zoo.music.train fit --config configs/music/music_transformer_demo.yaml
    python -m zoo.music.train fit --config configs/music/music_transformer_jsb.yaml --trainer.max_steps 5000
    python -m zoo.music.train test --config configs/music/music_transformer_jsb.yaml --ckpt_path runs/.../last.ckpt

Any LightningModule / LightningDataModule can be named by class path in the config (Music Transformer:
``zoo.music.module.MusicLM`` with ``zoo.music.data.ChoralesDataModule`` or ``PerformanceDataModule``).
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import ArgsType

from zoo.cli import ZooCLI

__all__ = ["cli_main"]


def cli_main(args: ArgsType = None) -> ZooCLI:
    return ZooCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                  args=args)


if __name__ == "__main__":
    cli_main()
