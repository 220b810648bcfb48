"""The Human3.6M camera model: the four cameras' intrinsics, the per-subject extrinsics, world <->
camera transforms, the distorted pinhole projection and screen-coordinate normalization.

The numbers are the published calibration of the dataset as VideoPose3D lists it
(``h36m_cameras_intrinsic_params`` / ``h36m_cameras_extrinsic_params`` of
``common/h36m_dataset.py``): per camera the principal point and focal length in pixels, radial
``(k1, k2, k3)`` and tangential ``(p1, p2)`` distortion, the resolution, and per subject the
orientation as a unit quaternion ``(w, x, y, z)`` (camera -> world rotation) and the camera centre in
the world frame (millimetres here, metres in :func:`camera`).

Conventions (VideoPose3D's, so its npz files read and project exactly):

- ``world_to_camera(X, q, t) = rotate(conj(q), X - t)`` and ``camera_to_world`` its inverse;
- :func:`project` applies the Brown-Conrady distortion to ``x / z`` in *normalized* camera units:
  focal length and centre are first divided by ``res_w / 2`` (:func:`camera` does it), so the result
  is in screen coordinates in ``[-1, 1]`` along x (:func:`normalize_screen`), and
  :func:`image_coordinates` maps it back to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CAMERA_IDS",
    "EXTRINSICS",
    "INTRINSICS",
    "Camera",
    "camera",
    "camera_to_world",
    "image_coordinates",
    "normalize_screen",
    "project",
    "qrot",
    "world_to_camera",
]

CAMERA_IDS: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")

#: per camera: centre (px), focal length (px), radial (k1, k2, k3), tangential (p1, p2), (res_w, res_h)
INTRINSICS: dict[str, dict[str, tuple[float, ...]]] = {
    "54138969": dict(
        center=(512.54150390625, 515.4514770507812), focal_length=(1145.0494384765625, 1143.7811279296875),
        radial=(-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
        tangential=(-0.0009756988729350269, -0.00142447161488235), res=(1000, 1002),
    ),
    "55011271": dict(
        center=(508.8486328125, 508.0649108886719), focal_length=(1149.6756591796875, 1147.5916748046875),
        radial=(-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
        tangential=(-0.0016190266469493508, -0.0027408944442868233), res=(1000, 1000),
    ),
    "58860488": dict(
        center=(519.8158569335938, 501.40264892578125), focal_length=(1149.1407470703125, 1148.7989501953125),
        radial=(-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
        tangential=(0.0014843869721516967, -0.0007599993259645998), res=(1000, 1000),
    ),
    "60457274": dict(
        center=(514.9682006835938, 501.88201904296875), focal_length=(1145.5113525390625, 1144.77392578125),
        radial=(-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
        tangential=(-0.0005872055771760643, -0.0018133620033040643), res=(1000, 1002),
    ),
}

#: per subject, one (orientation quaternion (w, x, y, z), camera centre in mm) per camera of CAMERA_IDS
EXTRINSICS: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]] = {
    "S1": (
        ((0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088), (1841.1070556640625, 4955.28466796875, 1563.4454345703125)),
        ((0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205), (1761.278564453125, -5078.0068359375, 1606.2650146484375)),
        ((0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696), (-1846.7777099609375, 5215.04638671875, 1491.972412109375)),
        ((0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435), (-1794.7896728515625, -3722.698974609375, 1574.8927001953125)),
    ),
    "S5": (
        ((0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332), (2097.3916015625, 4880.94482421875, 1605.732421875)),
        ((0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915), (2031.7008056640625, -5167.93310546875, 1612.923095703125)),
        ((0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576), (-1620.5948486328125, 5171.65869140625, 1496.43701171875)),
        ((0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092), (-1637.1737060546875, -3867.3173828125, 1547.033203125)),
    ),
    "S6": (
        ((0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938), (1935.4517822265625, 4950.24560546875, 1618.0838623046875)),
        ((0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428), (1969.803955078125, -5128.73876953125, 1632.77880859375)),
        ((0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334), (-1769.596435546875, 5185.361328125, 1476.993408203125)),
        ((0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802), (-1721.668701171875, -3884.13134765625, 1540.4879150390625)),
    ),
    "S7": (
        ((0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778), (1974.512939453125, 4926.3544921875, 1597.8326416015625)),
        ((0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508), (1937.0584716796875, -5119.7900390625, 1631.5665283203125)),
        ((0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278), (-1741.8111572265625, 5208.24951171875, 1464.8245849609375)),
        ((0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523), (-1734.7105712890625, -3832.42138671875, 1548.5830078125)),
    ),
    "S8": (
        ((0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773), (2150.65185546875, 4896.1611328125, 1611.9046630859375)),
        ((0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615), (2219.965576171875, -5148.453125, 1613.0440673828125)),
        ((0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755), (-1571.2215576171875, 5137.0185546875, 1498.1761474609375)),
        ((0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708), (-1476.913330078125, -3896.7412109375, 1547.97216796875)),
    ),
    "S9": (
        ((0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243), (2044.45849609375, 4935.1171875, 1481.2275390625)),
        ((0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801), (1990.959716796875, -5123.810546875, 1568.8048095703125)),
        ((0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915), (-1670.9921875, 5211.98583984375, 1528.387939453125)),
        ((0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822), (-1696.04345703125, -3827.099853515625, 1591.4127197265625)),
    ),
    "S11": (
        ((0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467), (2098.440185546875, 4926.5546875, 1500.278564453125)),
        ((0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085), (2083.182373046875, -4912.1728515625, 1561.07861328125)),
        ((0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407), (-1609.8153076171875, 5177.3359375, 1537.896728515625)),
        ((0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809), (-1590.738037109375, -3854.1689453125, 1578.017578125)),
    ),
}


@dataclass(frozen=True)
class Camera:
    """One calibrated camera of one subject, in VideoPose3D's normalized units.

    ``focal_length`` and ``center`` are divided by ``res_w / 2`` (``center`` also shifted by
    ``(1, res_h / res_w)``), ``translation`` is the camera centre in metres, ``orientation`` the
    camera -> world quaternion ``(w, x, y, z)``.
    """

    id: str
    res_w: int
    res_h: int
    focal_length: np.ndarray  # (2,)
    center: np.ndarray  # (2,)
    radial: np.ndarray  # (3,)
    tangential: np.ndarray  # (2,)
    orientation: np.ndarray  # (4,)
    translation: np.ndarray  # (3,)

    @property
    def intrinsic(self) -> np.ndarray:
        """``(9,)``: f (2), c (2), k (3), p (2), the layout :func:`project` reads."""
        return np.concatenate([self.focal_length, self.center, self.radial, self.tangential]).astype(np.float32)


def camera(subject: str, index: int) -> Camera:
    """The ``index``-th camera (order of :data:`CAMERA_IDS`) of ``subject`` (``"S1"`` ... ``"S11"``)."""
    if subject not in EXTRINSICS:
        raise ValueError(f"no Human3.6M extrinsics for subject {subject!r}; known: {sorted(EXTRINSICS)}")
    if not 0 <= index < len(CAMERA_IDS):
        raise ValueError(f"camera index must be in [0, {len(CAMERA_IDS)}), got {index}")
    cid = CAMERA_IDS[index]
    intr = INTRINSICS[cid]
    res_w, res_h = (int(v) for v in intr["res"])
    orientation, translation = EXTRINSICS[subject][index]
    return Camera(
        id=cid, res_w=res_w, res_h=res_h,
        focal_length=np.asarray(intr["focal_length"], np.float32) / res_w * 2,
        center=normalize_screen(np.asarray(intr["center"], np.float32), res_w, res_h),
        radial=np.asarray(intr["radial"], np.float32), tangential=np.asarray(intr["tangential"], np.float32),
        orientation=np.asarray(orientation, np.float32), translation=np.asarray(translation, np.float32) / 1000.0,
    )


def normalize_screen(x: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixels -> screen coordinates: ``x`` in ``[-1, 1]``, ``y`` in ``[-h/w, h/w]`` (aspect kept)."""
    if x.shape[-1] != 2:
        raise ValueError(f"normalize_screen: expected (..., 2) pixel coordinates, got {x.shape}")
    return x / w * 2 - np.array([1, h / w], dtype=x.dtype)


def image_coordinates(x: np.ndarray, w: int, h: int) -> np.ndarray:
    """Screen coordinates -> pixels (the inverse of :func:`normalize_screen`)."""
    if x.shape[-1] != 2:
        raise ValueError(f"image_coordinates: expected (..., 2) screen coordinates, got {x.shape}")
    return (x + np.array([1, h / w], dtype=x.dtype)) * w / 2


def _as_tensor(x: np.ndarray | Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def qrot(q: np.ndarray | Tensor, v: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Rotate vectors ``v (..., 3)`` by unit quaternions ``q (..., 4)`` (``(w, x, y, z)``, broadcast)."""
    numpy_in = isinstance(v, np.ndarray)
    qt, vt = _as_tensor(q).to(torch.float64), _as_tensor(v).to(torch.float64)
    qt = qt.expand(*vt.shape[:-1], 4)  # (..., 4)
    w, xyz = qt[..., :1], qt[..., 1:]  # (..., 1), (..., 3)
    uv = torch.linalg.cross(xyz, vt, dim=-1)  # (..., 3)
    uuv = torch.linalg.cross(xyz, uv, dim=-1)  # (..., 3)
    out = vt + 2 * (w * uv + uuv)  # (..., 3)
    return out.numpy().astype(v.dtype) if numpy_in else out.to(v.dtype)


def _conj(q: np.ndarray) -> np.ndarray:
    return np.asarray(q) * np.array([1, -1, -1, -1], dtype=np.asarray(q).dtype)


def world_to_camera(x: np.ndarray, orientation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """World positions ``(..., 3)`` -> the camera frame: ``rotate(conj(q), x - t)``."""
    return qrot(_conj(orientation).astype(x.dtype), x - translation.astype(x.dtype))


def camera_to_world(x: np.ndarray, orientation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Camera-frame positions ``(..., 3)`` -> the world frame (the inverse of :func:`world_to_camera`)."""
    return qrot(np.asarray(orientation, x.dtype), x) + translation.astype(x.dtype)


def project(x: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Camera-frame positions ``(..., 3)`` -> screen coordinates ``(..., 2)`` with radial and
    tangential distortion; ``intrinsic`` is :attr:`Camera.intrinsic` (normalized f and c)."""
    if x.shape[-1] != 3 or intrinsic.shape[-1] != 9:
        raise ValueError(f"project: expected (..., 3) points and (9,) intrinsics, got {x.shape} and {intrinsic.shape}")
    f, c, k, p = intrinsic[:2], intrinsic[2:4], intrinsic[4:7], intrinsic[7:9]
    xx = x[..., :2] / np.clip(x[..., 2:3], 1e-6, None)  # (..., 2), points behind the camera clamp to z = 1e-6
    r2 = np.sum(xx**2, axis=-1, keepdims=True)  # (..., 1)
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3  # (..., 1)
    tan = np.sum(p * xx, axis=-1, keepdims=True)  # (..., 1)
    xxx = xx * (radial + tan) + p * r2  # (..., 2)
    return (f * xxx + c).astype(x.dtype)
