"""Speech deepfake detection: self-supervised (SSL) and spectral features fused by attention.

El Kheir et al., "Two Views, One Truth", arXiv 2507.20417. See ``docs/speech/antispoofing.md``.

- :mod:`.features`: the SSL front end (torchaudio wav2vec 2.0 / XLS-R / WavLM) and MFCC / LFCC / CQCC;
- :mod:`.models`: the four fusions and the SSL-only / spectral-only baselines (registered with the zoo);
- :mod:`.data`: ASVspoof 2019 LA, ASVspoof 2021 LA / DF and In-the-Wild readers, and the offline
  generator writing a small corpus in the ASVspoof 2019 LA layout;
- :mod:`.metrics`: EER, min t-DCF, per-attack EER, ASVspoof score files;
- :mod:`.module`: the LightningModule (``python -m zoo.speech.train fit --config configs/speech/antispoofing/...``).
"""
