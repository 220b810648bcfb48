"""Vision models of the zoo. Import the sub-packages you need; this package imports nothing heavy.

- :mod:`zoo.vision.classification`: Astroformer and CrossFormer / CrossFormer++ (timm-registered).
- :mod:`zoo.vision.data`, :mod:`zoo.vision.module`, :mod:`zoo.vision.train`: classification training.
"""
