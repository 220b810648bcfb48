"""Image classification: Astroformer and CrossFormer / CrossFormer++ on the attention core.

- :mod:`.models`: the networks, registered with the zoo and with timm;
- :mod:`.data`: ``ImageClassificationDataModule`` (ImageFolder, Galaxy10 h5, CIFAR pickles, digits);
- :mod:`.module`: ``ImageClassifier`` (top-1/top-5, mixup, EMA, layer decay; figures after ``test``).

Importing this package imports nothing heavy; ``zoo.create_model`` imports ``.models`` on demand.
"""
