"""The training scaffold every task shares.

- :mod:`zoo.training.cli`: ``ZooCLI``, the one LightningCLI (``python -m zoo.train``);
- :mod:`zoo.training.module`: ``ZooModule``, a task writes its loss and its evaluation;
- :mod:`zoo.training.data`: ``ZooDataModule``, ``cache_dir``, ``safe_unpickle``, ``read_each``;
- :mod:`zoo.training.optim`: the decay rule, AdamW, warmup + cosine;
- :mod:`zoo.training.figures`: figures as rank-zero callbacks;
- :mod:`zoo.training.sampling`: the one next-token sampler.

Import the submodules; this package imports nothing heavy.
"""
