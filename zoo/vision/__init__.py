"""Vision tasks of the zoo. Import the task packages you need; this package imports nothing heavy.

- :mod:`zoo.vision.classification`: Astroformer and CrossFormer / CrossFormer++ (timm-registered).
- ``python -m zoo.vision.train``: the zoo's one training CLI.
"""
