"""Music: Music Transformer (Huang et al. 2018) and RIPO; MIDI tokenizers; datamodules; train/generate.

Kept light on purpose: importing ``zoo.music`` pulls in nothing heavy. Use the submodules:
``zoo.music.tokenizers``, ``zoo.music.data``, ``zoo.music.models``, ``zoo.music.module``,
``python -m zoo.music.train``, ``python -m zoo.music.generate``, ``python -m zoo.music.evaluate``,
``python -m zoo.music.demo``.
"""
