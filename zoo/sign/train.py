"""``python -m zoo.sign.train``: the same ZooCLI as ``python -m zoo.train`` (see :mod:`zoo.train`).

    python -m zoo.sign.train fit --config configs/sign/<task>/<config>.yaml
"""

from zoo.train import cli_main

__all__ = ["cli_main"]

if __name__ == "__main__":
    cli_main()
