"""Speech tasks of the zoo; importing ``zoo.speech`` pulls in nothing heavy.

- :mod:`zoo.speech.antispoofing`: speech deepfake detection, SSL and spectral features fused by attention;
- ``python -m zoo.speech.train``: the zoo's one training CLI.
"""
