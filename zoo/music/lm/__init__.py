"""Music language modelling: the Music Transformer (Huang et al. 2018) on chorales and piano performances.

- :mod:`.models`: ``MusicTransformer`` and its registered variants;
- :mod:`.tokenizers`: chorale (hold tokens), JSB 16th-grid and performance-event vocabularies;
- :mod:`.data`: ``ChoralesDataModule`` (music21 / JSB files), ``PerformanceDataModule`` (MAESTRO / MIDI);
- :mod:`.module`: ``MusicLM``; :mod:`.metrics`: token NLL;
- tools: ``python -m zoo.music.lm.evaluate``, ``python -m zoo.music.lm.demo`` (and the domain's
  ``python -m zoo.music.generate``).
"""
