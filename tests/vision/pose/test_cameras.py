"""The Human3.6M camera model: round trips and the projection."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.vision.pose import cameras


def test_quaternions_are_unit_and_world_camera_round_trip():
    x = np.random.default_rng(0).normal(size=(10, 17, 3)).astype(np.float32)
    for subject in cameras.EXTRINSICS:
        for index in range(4):
            cam = cameras.camera(subject, index)
            assert np.linalg.norm(cam.orientation) == pytest.approx(1.0, abs=1e-6)
            back = cameras.camera_to_world(cameras.world_to_camera(x, cam.orientation, cam.translation), cam.orientation, cam.translation)
            np.testing.assert_allclose(back, x, atol=1e-5)


def test_camera_centre_maps_to_origin_and_subject_is_in_front():
    cam = cameras.camera("S9", 2)
    origin = cameras.world_to_camera(cam.translation[None].astype(np.float32), cam.orientation, cam.translation)
    np.testing.assert_allclose(origin, 0.0, atol=1e-6)
    # the capture area's centre, 1 m above the floor, lies in front of every camera, inside the image
    for index in range(4):
        c = cameras.camera("S1", index)
        p = cameras.world_to_camera(np.array([[0.0, 0.0, 1.0]], np.float32), c.orientation, c.translation)
        assert p[0, 2] > 2.0
        px = cameras.image_coordinates(cameras.project(p, c.intrinsic), c.res_w, c.res_h)
        assert (0 < px).all() and (px[0] < [c.res_w, c.res_h]).all()


def test_projection_without_distortion_is_pinhole_and_normalization_round_trips():
    cam = cameras.camera("S1", 0)
    intrinsic = cam.intrinsic.copy()
    intrinsic[4:] = 0  # no distortion
    p = np.array([[0.3, -0.2, 4.0]], np.float32)
    expected = cam.focal_length * p[:, :2] / p[:, 2:] + cam.center
    np.testing.assert_allclose(cameras.project(p, intrinsic), expected, rtol=1e-6)
    # pixels: the focal length in pixels times x/z plus the principal point
    px = cameras.image_coordinates(cameras.project(p, intrinsic), cam.res_w, cam.res_h)
    f, c = cameras.INTRINSICS[cam.id]["focal_length"], cameras.INTRINSICS[cam.id]["center"]
    np.testing.assert_allclose(px[0], [f[0] * 0.3 / 4 + c[0], f[1] * -0.2 / 4 + c[1]], rtol=1e-3)
    xy = np.array([[0.0, 0.0], [1000.0, 1002.0], [512.0, 300.0]], np.float32)
    np.testing.assert_allclose(cameras.image_coordinates(cameras.normalize_screen(xy, 1000, 1002), 1000, 1002), xy, rtol=1e-6)
    assert cameras.normalize_screen(xy, 1000, 1002)[1, 0] == pytest.approx(1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="subject"):
        cameras.camera("S2", 0)
    with pytest.raises(ValueError, match="camera index"):
        cameras.camera("S1", 4)
