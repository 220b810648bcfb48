"""MatchStereo's official-checkpoint converter: the official key layout, strict loading with a readable
diff, the unused keys dropped by name, and outputs against the official code's.

``fixtures/matchstereo_tiny_official_keys.json`` holds the names and shapes of
``MatchStereo(variant="tiny").state_dict()`` of TingmanYan/MatchAttention (646 keys), as its own code
builds them on CPU. The ``OFFICIAL_*`` numbers below were produced by running the official forward
(``mat_impl="pytorch"``, float64, CPU) in a scratch copy outside the repository on the weights of
:func:`official_weights` and the pair of :func:`official_pair`; no official code is part of the zoo.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from pathlib import Path

import pytest
import torch

import zoo
from zoo.hub import count_parameters
from zoo.hub.checkpoints import CheckpointMismatchError
from zoo.vision.stereo.models.matchstereo import OFFICIAL_UNUSED, convert_official

FIXTURE = Path(__file__).parent / "fixtures" / "matchstereo_tiny_official_keys.json"
OFFICIAL = json.loads(FIXTURE.read_text())
OFFICIAL_SHAPES: dict[str, list[int]] = OFFICIAL["keys"]


def _unused(key: str) -> bool:
    return any(p.fullmatch(key) for p in OFFICIAL_UNUSED)


def official_weights(shapes: dict[str, list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Deterministic float64 weights for ``shapes`` (default: the official tiny layout), each key drawn from
    its own seed (CRC32 of its name) so that a key's value does not depend on which other keys exist.
    Large enough that every layer matters: matrices ~ N(0, 1 / fan_in), norm scales 1 + N(0, 0.1), biases
    N(0, 0.1), ``field_scale`` 0.1 + N(0, 0.02)."""
    out = {}
    for key, shape in (OFFICIAL_SHAPES if shapes is None else shapes).items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        t = torch.randn(list(shape), generator=g, dtype=torch.float64)
        if key.endswith("field_scale"):
            t = 0.1 + 0.02 * t
        elif len(shape) >= 2:
            t = t * (torch.Size(shape)[1:].numel() ** -0.5)
        elif key.endswith("bias"):
            t = 0.1 * t
        else:  # norm weights, res_scale
            t = 1 + 0.1 * t
        out[key] = t
    return out


def official_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured left image and a right view shifted by 3 px with a little noise, float64 in [0, 1]."""
    g = torch.Generator().manual_seed(1)
    left = torch.rand(1, 3, height, width, generator=g, dtype=torch.float64)
    right = torch.roll(left, -3, dims=-1) * 0.9 + 0.1 * torch.rand(1, 3, height, width, generator=g, dtype=torch.float64)
    return left, right


def _save(tmp_path: Path, state_dict: dict[str, torch.Tensor], name: str = "matchstereo_tiny_fsd.pth") -> Path:
    path = tmp_path / name
    torch.save({"model": state_dict}, path)
    return path


def test_fixture_is_the_official_tiny_layout():
    assert len(OFFICIAL_SHAPES) == 646
    total = sum(torch.Size(s).numel() for s in OFFICIAL_SHAPES.values())
    assert total == OFFICIAL["num_parameters"] == 8_784_528  # official README: 8.78M


def test_official_layout_is_ours_plus_the_unused_keys():
    ours = {k: list(v.shape) for k, v in zoo.create_model("matchstereo_t").state_dict().items()}
    unused = sorted(k for k in OFFICIAL_SHAPES if _unused(k))
    # the ImageNet head, and res_scale{1,2} of the 6 + 2 blocks of the last two encoder stages
    assert [k for k in unused if k.startswith("encoder.head")] == ["encoder.head.bias", "encoder.head.weight"]
    assert len(unused) == 2 + 2 * (6 + 2)
    assert {re.match(r"encoder\.stages\.(\d+)", k).group(1) for k in unused if "res_scale" in k} == {"2", "3"}
    assert {k: s for k, s in OFFICIAL_SHAPES.items() if k not in unused} == ours


def test_load_official_loads_every_used_tensor_and_lists_the_dropped_ones(tmp_path, caplog):
    weights = official_weights()
    with caplog.at_level(logging.INFO, logger="zoo.vision.stereo.models.matchstereo"):
        model = zoo.load_official("matchstereo_t", _save(tmp_path, weights))
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "dropping 18 keys" in message
    for key in ("encoder.head.weight", "encoder.head.bias", "encoder.stages.2.0.res_scale1.scale",
                "encoder.stages.3.1.res_scale2.scale"):
        assert key in message
    own = model.state_dict()
    assert all(torch.equal(own[k], weights[k].float()) for k in own)


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        ("missing", "missing key"),
        ("unexpected", "unexpected key"),
        ("shape", "shape mismatch"),
    ],
)
def test_a_corrupted_checkpoint_is_a_readable_error(tmp_path, corrupt, expected):
    weights = official_weights()
    key = "match_attentions.1.layers.3.match_attention_cross.proj.weight"
    if corrupt == "missing":
        del weights[key]
    elif corrupt == "unexpected":
        weights["match_attentions.1.layers.3.extra.weight"] = torch.zeros(3)
    else:
        weights[key] = torch.zeros(5, 5)
    with pytest.raises(CheckpointMismatchError) as err:
        zoo.load_official("matchstereo_t", _save(tmp_path, weights))
    text = str(err.value)
    assert expected in text and "matchstereo_tiny_fsd.pth" in text
    assert ("extra.weight" if corrupt == "unexpected" else "match_attention_cross.proj.weight") in text
    if corrupt == "shape":
        assert "checkpoint (5, 5) vs model (130, 272)" in text


def test_the_unused_keys_are_dropped_only_by_name(tmp_path):
    weights = official_weights()
    weights["encoder.head2.weight"] = torch.zeros(2)  # looks like a head, is not one of the known unused keys
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.head2\.weight"):
        zoo.load_official("matchstereo_t", _save(tmp_path, weights))


def test_a_checkpoint_of_another_variant_reports_its_shapes(tmp_path):
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        zoo.load_official("matchstereo_s", _save(tmp_path, official_weights()))


def test_convert_official_leaves_the_input_untouched():
    weights = official_weights()
    converted = convert_official(weights, zoo.create_model("matchstereo_t"))
    assert len(weights) == 646 and len(converted) == 628
    assert all(converted[k] is weights[k] for k in converted)


def test_a_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "matchstereo_tiny_fsd.pth"
    torch.save({"model": official_weights(), "args": object()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        zoo.load_official("matchstereo_t", path)


# ---------------------------------------------------------------------------------------- official outputs
# The official forward on official_weights() and official_pair(H, W), float64, in training mode, left
# view: the sums of a few refinement steps (each official flow map upsampled as ours are: bilinear to
# full size, times the scale; negated to a disparity), of the final convex-upsampled disparity, and the
# final disparity at a few pixels (row, col).
OFFICIAL_REDUCED = {  # MatchStereo(variant="tiny", refine_win_rs=[1, 1, 1, 1], refine_nums=[1, 1, 1, 1]), 128 x 160
    "size": (128, 160), "overrides": dict(radii=(1, 1, 1, 1), refine_layers=(1, 1, 1, 1)), "num_steps": 13,
    "steps": {0: 1276477.3648052334, 1: 6627858.26091259, 6: 3470130.067382887, 11: 1736112.951297163},
    "final_sum": 1727744.5220290797,
    "pixels": {(0, 0): -11.9033375823179, (17, 40): 20.941387530382272, (64, 101): 196.16546963942858,
               (127, 159): 0.7101369179571773},
}
OFFICIAL_FULL = {  # MatchStereo(variant="tiny"), 192 x 224
    "size": (192, 224), "overrides": {}, "num_steps": 57,
    "steps": {0: 5007611.417724234, 1: 11682668.126017068, 28: 57322828.030698225, 55: 55293308.0040479},
    "final_sum": 54863813.748661384,
    "pixels": {(0, 0): 95.56072602360244, (17, 40): 1362.9884315961026, (64, 101): 1551.2668391204288,
               (191, 223): 81.59016257634234},
}


def _compare_with_official(reference: dict) -> None:
    model = zoo.create_model("matchstereo_t", attention_backend="reference", **reference["overrides"]).double()
    model.load_state_dict(official_weights({k: v.shape for k, v in model.state_dict().items()}), strict=True)
    model.train()
    with torch.no_grad():
        out = model(*official_pair(*reference["size"]))
    steps, final = out["disparities"], out["disparity"][0, 0]
    assert final.shape == reference["size"]
    assert len(steps) == reference["num_steps"]  # the initial disparity, every refinement step, the final one
    for index, value in reference["steps"].items():
        torch.testing.assert_close(float(steps[index].sum()), value, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(float(final.sum()), reference["final_sum"], rtol=1e-9, atol=1e-6)
    for (row, col), value in reference["pixels"].items():
        torch.testing.assert_close(float(final[row, col]), value, rtol=1e-9, atol=1e-9)


def test_reduced_official_network_outputs():
    _compare_with_official(OFFICIAL_REDUCED)


@pytest.mark.slow
def test_official_tiny_network_outputs():
    _compare_with_official(OFFICIAL_FULL)


def test_parameter_counts_match_the_official_models():
    """Official totals (its code on CPU; README 8.78M / 25.2M / 75.5M) = ours + the 1000-class head + the
    res_scale vectors of the last two stages (6 and 2 blocks, 2 each)."""
    official = {"matchstereo_t": 8_784_528, "matchstereo_s": 25_231_248, "matchstereo_b": 75_448_400}
    readme = {"matchstereo_t": 8.78e6, "matchstereo_s": 25.2e6, "matchstereo_b": 75.5e6}
    for name, total in official.items():
        with torch.device("meta"):
            model = zoo.create_model(name)
        c2, c3 = model.config.dims[2], model.config.dims[3]
        unused = (c3 * 1000 + 1000) + 2 * 6 * c2 + 2 * 2 * c3
        assert count_parameters(model) + unused == total, name
        assert abs(total - readme[name]) / readme[name] < 0.005
        assert abs(count_parameters(model) - total) / total < 0.025  # the dead weights are ~2% of T
