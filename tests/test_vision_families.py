"""SmolVLM / Idefics3, LFM2-VL and InternVL beyond their goldens (``tests/test_mmproj.py``, ``tests/test_convert.py``):
the LFM2-VL patch-embedding rearrangement, and the text model of a config whose ``text_config`` names
no architecture, which the reference cannot convert (its projector still converts)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hfstream import cli, errors
from hfstream.arch.lfm2_vl import _conv_patch_embedding
from hfstream.graph import Constant


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
    (snapshot,) = (fixture_root / "hfs-test" / repo / "commits").iterdir()
    model = tmp_path / repo
    shutil.copytree(snapshot, model)
    config = json.loads((model / "config.json").read_text())
    assert config["text_config"].pop("architectures") == [text_arch]
    (model / "config.json").write_text(json.dumps(config))
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
    (snapshot,) = (fixture_root / "hfs-test" / "tiny-internvl3" / "commits").iterdir()
    model = tmp_path / "tiny-internvl3"
    shutil.copytree(snapshot, model)
    config = json.loads((model / "config.json").read_text())
    config["llm_config"]["architectures"] = ["InternLM2ForCausalLM"]  # InternVL2.5-8B's text model
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(model), "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedArchitectureError.exit_code
    assert len(err.strip().splitlines()) == 1 and "InternLM2ForCausalLM text model" in err
    assert list(out.iterdir()) == []
