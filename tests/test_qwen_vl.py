"""Qwen's vision-language projectors (``hfstream/arch/qwen_vision.py``): the configs the reference
refuses, and a tower without the blocks its config counts, are refused in one line before anything
is written. The bytes of what they convert are
``test_mmproj.py``'s (goldens of every fixture)."""

from __future__ import annotations

import json
import shutil

import pytest

from hfstream import cli, errors
from hfstream.arch.qwen_vision import window_attention_pattern


@pytest.mark.parametrize("blocks, n", [([7, 15, 23, 31], 8), ([1, 3], 2), ([3], 4), ([0, 1, 2], 1)])
def test_the_window_attention_pattern_is_the_spacing_of_the_full_attention_blocks(blocks, n):
    assert window_attention_pattern(blocks) == n


@pytest.mark.parametrize("blocks", [[1, 4], [7, 15, 24], [], None, [1.0, 3.0], "7,15"])
def test_full_attention_blocks_not_evenly_spaced_are_refused(blocks):
    with pytest.raises(errors.InvalidConfigError, match="fullatt_block_indexes"):
        window_attention_pattern(blocks)


def _local_copy(fixture_root, tmp_path, name: str, edit) -> str:
    (snapshot,) = (fixture_root / "hfs-test" / name / "commits").iterdir()
    repo = tmp_path / name
    shutil.copytree(snapshot, repo)
    config = json.loads((repo / "config.json").read_text())
    edit(config)
    (repo / "config.json").write_text(json.dumps(config))
    return str(repo)


@pytest.mark.parametrize("name, edit, code, words", [
    ("tiny-qwen25-vl", lambda c: c["vision_config"].update(fullatt_block_indexes=[1, 2]),
     errors.InvalidConfigError.exit_code, ["fullatt_block_indexes [1, 2]", "every 2 blocks from block 1"]),
    ("tiny-qwen3-vl", lambda c: c["vision_config"].update(deepstack_visual_indexes=[1, 4]),
     errors.InvalidConfigError.exit_code, ["deepstack_visual_indexes [1, 4]", "depth-4"]),
    ("tiny-qwen2-vl", lambda c: c.update(model_type="qwen2_5_omni"),
     errors.UnsupportedArchitectureError.exit_code, ["qwen2_5_omni"]),
    # the completeness check holds a tower to the blocks its config counts
    ("tiny-qwen2-vl", lambda c: c["vision_config"].update(depth=4),
     errors.MissingTensorError.exit_code, ["v.blk.3.", "visual.blocks.3.", "counts 4 layers"]),
])
def test_a_projector_config_the_reference_refuses_is_refused_in_one_line(fixture_root, tmp_path, capsys,
                                                                        name, edit, code, words):
    repo = _local_copy(fixture_root, tmp_path, name, edit)
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", repo, "--mmproj", "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert list(out.iterdir()) == []
