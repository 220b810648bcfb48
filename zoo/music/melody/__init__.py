"""Melody completion: the RIPO transformer (Guo et al. 2023) and its baselines on (pitch, duration) tokens.

- :mod:`.models`: ``RIPOTransformer`` and its registered variants;
- :mod:`.tokenizer`: the (pitch, duration) vocabulary and its MIDI adapter for generation;
- :mod:`.data`: ``MelodyDataModule`` (music21's folk melodies, or MIDI / MusicXML / ABC folders);
- :mod:`.module`: ``MelodyLM``.
"""
