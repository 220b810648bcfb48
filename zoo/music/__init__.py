"""Music tasks of the zoo; importing ``zoo.music`` pulls in nothing heavy.

- :mod:`zoo.music.lm`: Music Transformer (chorales, JSB, piano performances);
- :mod:`zoo.music.melody`: RIPO and its baselines (melody completion);
- :mod:`zoo.music.midi`: MIDI I/O shared by both; ``python -m zoo.music.generate`` samples any music
  model, ``python -m zoo.music.train`` trains one.
"""
