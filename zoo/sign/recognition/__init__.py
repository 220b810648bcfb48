"""Isolated sign recognition on MediaPipe Holistic landmark sequences (BdSLW401, arXiv 2503.02360).

- :mod:`.encoding`: ``encode(landmarks, "raw" | "rqe" | "rqe_sf")``, the Holistic layout;
- :mod:`.models`: SLRT, the 3-layer 8-head landmark transformer (``zoo.list_models("slrt*")``);
- :mod:`.data`: readers (``.npy``, Kaggle GISLR parquet, WLASL json, ``<gloss>/<video>.npy`` folders),
  the synthetic-sign generator and ``SignDataModule``;
- :mod:`.module`: ``SignRecognizer`` (loss, top-1/top-5, WER, per-class accuracy);
- :mod:`.metrics`, :mod:`.figures`: WER and the figure callbacks (confusion, per-class, attention).

Import the submodules; this package imports nothing heavy.
"""
