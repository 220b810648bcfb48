"""Vision tasks of the zoo. Import the task packages you need; this package imports nothing heavy.

- :mod:`zoo.vision.classification`: Astroformer and CrossFormer / CrossFormer++ (timm-registered);
- :mod:`zoo.vision.pose`: ConvFormer, 3-D human pose lifted from 2-D keypoint sequences;
- :mod:`zoo.vision.retrieval`: X-Pool, text-conditioned video pooling for text-video retrieval on CLIP.
- ``python -m zoo.vision.train``: the zoo's one training CLI.
"""
