"""Kind 6: bad input fails with a clear error naming the file or the argument."""

from __future__ import annotations

import dataclasses
import json

import pytest

import zoo
from zoo.hub import registry

MODELS = ["music_transformer_demo", "ripo_folk", "astroformer_0", "crossformer_t"]


def _int_fields(name: str) -> list[str]:
    cfg = registry.model_entry(name).config
    return [f.name for f in dataclasses.fields(cfg) if type(getattr(cfg, f.name)) is int]


@pytest.mark.parametrize("name", MODELS)
def test_overrides_of_the_wrong_type_name_the_field(name):
    for field in _int_fields(name):
        with pytest.raises(ValueError, match=rf"create_model\('{name}'\): {field}='8' is not of type int"):
            zoo.create_model(name, **{field: "8"})
        with pytest.raises(ValueError, match=rf"{field}=True is not of type int"):
            zoo.create_model(name, **{field: True})


@pytest.mark.parametrize("name", MODELS)
def test_impossible_values_are_refused_before_building(name):
    for field in _int_fields(name):
        with pytest.raises(ValueError, match=rf"{field}=-1 must not be negative"):
            zoo.create_model(name, **{field: -1})
    dropouts = [f.name for f in dataclasses.fields(registry.model_entry(name).config) if "drop" in f.name]
    for field in dropouts:
        with pytest.raises(ValueError, match=rf"{field}=1.5 must lie in \[0, 1\)"):
            zoo.create_model(name, **{field: 1.5})
        with pytest.raises(ValueError, match=rf"{field}=nan must be finite"):
            zoo.create_model(name, **{field: float("nan")})


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("music_transformer_demo", {"num_heads": 7}, r"d_model \(128\) must be divisible by num_heads \(7\)"),
        ("ripo_folk", {"num_heads": 3}, r"dim \(128\) must be divisible by num_heads \(3\)"),
        ("crossformer_t", {"depths": (1, 1)}, "one per stage"),
        ("astroformer_0", {"img_size": 100}, "must be a multiple of"),
    ],
)
def test_config_checks_run_inside_create_model(name, overrides, match):
    with pytest.raises(ValueError, match=rf"create_model\('{name}'\): invalid config: .*{match}"):
        zoo.create_model(name, **overrides)


def test_broken_config_json_is_named(tmp_path):
    model = zoo.create_model("music_transformer_demo", **registry.model_entry("music_transformer_demo").test_overrides)
    zoo.save_pretrained(model, tmp_path, name="music_transformer_demo")
    for text in ("{not json", json.dumps(["a list"]), json.dumps({"model": 3}), "\udcff"):
        (tmp_path / "config.json").write_text(text, errors="surrogateescape")
        with pytest.raises(ValueError, match=r"config\.json"):
            zoo.load_pretrained(tmp_path)


def test_generate_on_files_that_are_not_checkpoints(tmp_path):
    from zoo.music.generate import main

    (tmp_path / "notes.ckpt").write_text("just text")
    with pytest.raises(ValueError, match=r"notes\.ckpt: not a torch checkpoint"):
        main(["--checkpoint", str(tmp_path / "notes.ckpt"), "--out", str(tmp_path / "x.mid")])
    with pytest.raises(ValueError, match=r"--checkpoint .*readme\.txt: expected a pretrained directory"):
        main(["--checkpoint", str(tmp_path / "readme.txt"), "--out", str(tmp_path / "x.mid")])
    with pytest.raises(ValueError, match="--out must end in .mid"):
        main(["--checkpoint", "music_transformer_chorales", "--out", str(tmp_path / "x.wav")])
    with pytest.raises(ValueError, match="top_p must be in"):
        main(["--checkpoint", "music_transformer_chorales", "--out", str(tmp_path / "x.mid"), "--top_p", "2"])
