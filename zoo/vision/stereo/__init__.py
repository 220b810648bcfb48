"""Stereo matching: MatchStereo (Yan et al., "MatchAttention", arXiv 2510.14260) and its training system.

- :mod:`zoo.vision.stereo.models`: ``matchstereo_{t,s,b}`` and the tiny ``matchstereo_demo``;
- :mod:`zoo.vision.stereo.data`: the readers (PFM, KITTI uint16 PNG, Middlebury v3 / ETH3D folders,
  SceneFlow trees), augmentation, the synthetic generator and the Motorcycle pair, the datamodule;
- :mod:`zoo.vision.stereo.metrics`: EPE, D1 (KITTI's rule and RAFT-Stereo's > 3 px), bad-n;
- :mod:`zoo.vision.stereo.module`: ``StereoMatcher``, the LightningModule (sequence loss + occlusion term);
- :mod:`zoo.vision.stereo.figures`: the test figures (left image, predicted / true disparity, error);
- ``python -m zoo.vision.stereo.predict``: disparity of one image pair as PFM + PNG.
"""
