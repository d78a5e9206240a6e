"""SmolVLM / Idefics3, LFM2-VL and InternVL beyond their goldens (``tests/test_mmproj.py``, ``tests/test_convert.py``):
the LFM2-VL patch-embedding rearrangement, and the text model of a config whose ``text_config`` names
no architecture, which the reference cannot convert (its projector still converts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hfstream import cli, errors
from hfstream.arch.lfm2_vl import _conv_patch_embedding
from hfstream.graph import Constant
from fixtures.build import snapshot_dir


def _copy_with_config(fixture_root, tmp_path, repo: str, edit) -> Path:
    """A local copy of a fixture repo whose config.json ``edit`` (config -> None) has changed."""
    model = tmp_path / repo
    shutil.copytree(snapshot_dir(fixture_root / "hfs-test" / repo), model)
    config = json.loads((model / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_lfm2_vl_patch_embedding_becomes_a_channels_first_convolution():
    width = 3
    flat = np.random.default_rng(5).standard_normal((width, 16 * 16 * 3)).astype(np.float32)
    node = _conv_patch_embedding(Constant(flat))
    assert node.shape == (width, 3, 16, 16)
    expected = np.empty((width, 3, 16, 16), dtype=np.float32)
    for o in range(width):
        for y in range(16):
            for x in range(16):
                for c in range(3):  # SigLIP 2 flattens a patch row by row, each pixel's channels together
                    expected[o, c, y, x] = flat[o, (y * 16 + x) * 3 + c]
    assert np.array_equal(node.evaluate({}), expected)


def test_lfm2_vl_patch_embedding_of_another_patch_size_is_refused():
    with pytest.raises(errors.ConfigMismatchError, match="16 x 16 patches of 3 channels"):
        _conv_patch_embedding(Constant(np.zeros((2, 14 * 14 * 3), dtype=np.float32)))


@pytest.mark.parametrize("repo, text_arch", [("tiny-smolvlm2", "VLlama3ForCausalLM"), ("tiny-lfm2-vl", "Lfm2ForCausalLM")])
def test_a_text_config_without_architectures_has_no_text_model_but_a_projector(repo, text_arch, fresh_hub, fixture_root,
                                                                              tmp_path, capsys):
    def drop_text_architectures(config):
        assert config["text_config"].pop("architectures") == [text_arch]

    model = _copy_with_config(fixture_root, tmp_path, repo, drop_text_architectures)
    out = tmp_path / "out"
    out.mkdir()

    rc = cli.main(["convert", str(model), "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedArchitectureError.exit_code
    assert len(err.strip().splitlines()) == 1 and "text_config names no architecture" in err and text_arch in err
    assert list(out.iterdir()) == []

    rc = cli.main(["convert", str(model), "--mmproj", "--outtype", "f16", "-o", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert [p.name.startswith("mmproj-") for p in out.iterdir()] == [True]


def test_internvl_with_a_text_model_hfstream_does_not_pair_is_refused_in_one_line(fresh_hub, fixture_root, tmp_path,
                                                                                  capsys):
    model = _copy_with_config(fixture_root, tmp_path, "tiny-internvl3",  # InternVL2.5-8B's text model:
                              lambda config: config["llm_config"].update(architectures=["InternLM2ForCausalLM"]))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(model), "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedArchitectureError.exit_code
    assert len(err.strip().splitlines()) == 1 and "InternLM2ForCausalLM text model" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("repo", ["tiny-internvl3", "tiny-pixtral"])
def test_a_tower_activation_clip_has_no_flag_for_is_refused(repo, fixture_root, tmp_path, capsys):
    """InternVL's and Pixtral's towers run SiLU or GELU, each a flag of clip's; another is refused."""
    model = _copy_with_config(fixture_root, tmp_path, repo,
                              lambda config: config["vision_config"].update(hidden_act="relu"))
    out = tmp_path / "out"
    rc = cli.main(["convert", str(model), "--mmproj", "--outtype", "f16", "-o", str(out) + "/", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.InvalidConfigError.exit_code
    assert len(err) == 1 and "hidden_act 'relu' is neither silu nor gelu" in err[0], err
    assert not out.exists() or list(out.iterdir()) == []
