"""3-D human pose estimation from 2-D keypoint sequences: ConvFormer and the VideoPose3D baseline on
the Human3.6M pipeline (VideoPose3D's npz files).

- :mod:`zoo.vision.pose.models`: ``convformer_{27,81,243}``, ``videopose3d_{27,81,243}``;
- :mod:`zoo.vision.pose.data`: the npz readers, the cameras, windows, flips, the offline generator;
- :mod:`zoo.vision.pose.metrics`: MPJPE, P-MPJPE, N-MPJPE, MPJVE, per-action averages;
- :mod:`zoo.vision.pose.module`: ``PoseLifter``, the LightningModule;
- :mod:`zoo.vision.pose.figures`: the test figures (skeletons, per-action errors).
"""
