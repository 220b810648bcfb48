"""``python -m zoo.speech.train``: the same ZooCLI as ``python -m zoo.train`` (see :mod:`zoo.train`).

    python -m zoo.speech.train fit --config configs/speech/<task>/<config>.yaml
"""

from zoo.train import cli_main

__all__ = ["cli_main"]

if __name__ == "__main__":
    cli_main()
