"""DeepSeek-V4 beyond the goldens: its storage formats node by node, what is left out is never fetched, refusals.

``tests/test_convert.py`` compares tiny-deepseek-v4 byte for byte with the reference's output for every
outtype (``tests/test_llamacpp_decode.py`` decodes it). Here: the E8M0 scales and the FP8 dequantization
against arithmetic written out independently, the MXFP4 experts stacked expert by expert, the hash
table as I32, the MTP block's bytes never requested, and the one-line refusals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import hfstream
from hfstream import cli, errors
from hfstream.graph import (
    FLOAT8_VALUES,
    MXFP4,
    BlockScale,
    Bytes,
    EncodedStack,
    Int32,
    Load,
)
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir

REPO = "hfs-test/tiny-deepseek-v4"


class FakeFile:
    """Source tensors back to back in one byte string."""

    def __init__(self):
        self.blob = bytearray()

    def add(self, name: str, raw: bytes, dtype: str, shape: tuple[int, ...]) -> SourceTensor:
        start = len(self.blob)
        self.blob += raw
        return SourceTensor("f", name, dtype, shape, start, start + len(raw))

    def data(self, node, r0, r1):
        return {s: bytes(self.blob[s.start:s.end]) for s in node.spans(r0, r1)}


def test_e8m0_is_a_bare_power_of_two():
    e8m0 = FLOAT8_VALUES["F8_E8M0"]
    assert e8m0[127] == 1.0 and e8m0[128] == 2.0 and e8m0[120] == 2.0 ** -7 and e8m0[254] == 2.0 ** 127
    assert e8m0[0] == np.float32(2.0 ** -127) and e8m0[0] > 0  # a float32 subnormal, not zero
    assert np.isnan(e8m0[255]) and np.isfinite(e8m0[:255]).all()


def test_e8m0_is_torchs():
    torch = pytest.importorskip("torch")
    ref = torch.arange(256, dtype=torch.uint8).view(torch.float8_e8m0fnu).float().numpy()
    mine = FLOAT8_VALUES["F8_E8M0"]
    assert np.isnan(ref[255]) and np.array_equal(mine.view(np.uint32)[:255], ref.view(np.uint32)[:255])


def test_fp8_with_e8m0_block_scales_is_codes_times_two_to_the_exponent():
    """200 x 150 in 128 x 128 blocks: partial blocks on both edges; each value is its E4M3 code's value
    times 2^(e - 127) of its block, computed here element by element."""
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 0x7E, size=(200, 150), dtype=np.uint8) | (rng.integers(0, 2, (200, 150)) << 7).astype(np.uint8)
    exps = rng.integers(110, 135, size=(2, 2), dtype=np.uint8)
    f = FakeFile()
    w = f.add("w.weight", codes.tobytes(), "F8_E4M3", (200, 150))
    s = f.add("w.scale", exps.tobytes(), "F8_E8M0", (2, 2))
    node = BlockScale(Load(w), Load(s), (128, 128))
    want = np.empty((200, 150), dtype=np.float32)
    for r in range(200):
        for c in range(150):
            want[r, c] = FLOAT8_VALUES["F8_E4M3"][codes[r, c]] * np.float32(2.0 ** (int(exps[r // 128, c // 128]) - 127))
    assert np.array_equal(node.evaluate(f.data(node, 0, 200)), want)
    assert np.array_equal(node.eval_rows(f.data(node, 128, 200), 128, 200), want[128:])


def test_mxfp4_experts_stack_expert_by_expert_and_stay_mxfp4():
    """Three experts of I8 codes and E8M0 scales: the stack is each expert's ggml block_mxfp4 rows in
    turn (one scale byte, then values j and j + 16 in a byte), and says so (``encoded``)."""
    rng = np.random.default_rng(6)
    f, parts, want = FakeFile(), [], []
    for x in range(3):
        packed = rng.integers(0, 256, size=(4, 32), dtype=np.uint8)  # 4 rows of 64 values
        exps = rng.integers(118, 124, size=(4, 2), dtype=np.uint8)
        w = f.add(f"e{x}.weight", packed.tobytes(), "I8", (4, 32))
        s = f.add(f"e{x}.scale", exps.tobytes(), "F8_E8M0", (4, 2))
        parts.append(MXFP4(Bytes(w, (4, 32)), Bytes(s, (4, 2))))
        for r in range(4):
            row = []
            for b in range(2):
                vals = [(packed[r, b * 16 + k // 2] >> (4 * (k % 2))) & 0x0F for k in range(32)]
                row += [exps[r, b]] + [vals[j] | (vals[j + 16] << 4) for j in range(16)]
            want.append(row)
    stack = EncodedStack(tuple(parts))
    assert stack.encoded == QT.MXFP4 and stack.shape == (3, 4, 64)
    assert stack.eval_rows(f.data(stack, 0, 12), 0, 12).tolist() == want  # (bytes: no logical reshape)
    assert stack.eval_rows(f.data(stack, 4, 8), 4, 8).tolist() == want[4:8]  # the second expert alone
    with pytest.raises(ValueError):
        EncodedStack((parts[0], Load(f.add("x", b"\0" * 4, "F32", (1, 1)))))


def test_int32_writes_an_i64_table_as_i32_and_refuses_what_does_not_fit():
    ids = np.array([[0, 7], [3, 5], [6, 1]], dtype="<i8")
    f = FakeFile()
    node = Int32(f.add("t", ids.tobytes(), "I64", (3, 2)))
    assert node.encoded == QT.I32 and node.dtype == np.int32
    got = node.eval_rows(f.data(node, 1, 3), 1, 3)
    assert got.dtype == np.int32 and got.tolist() == [[3, 5], [6, 1]]
    big = Int32(f.add("u", np.array([[1 << 31]], dtype="<i8").tobytes(), "I64", (1, 1)))
    with pytest.raises(errors.InvalidHeaderError):
        big.evaluate(f.data(big, 0, 1))


def test_the_mtp_block_is_never_fetched(fresh_hub, fixture_root, tmp_path):
    """``mtp.0.*`` (most of the last shard's tensors) is left out of the GGUF, as the reference leaves
    it: none of its bytes may be requested. The output has the tables, the MXFP4 stacks and no nextn."""
    snap = snapshot_dir(fixture_root / REPO)
    shard = snap / "model-00003-of-00003.safetensors"
    blob = shard.read_bytes()
    mtp = [t for t in parse_header(shard.name, blob, len(blob)) if t.name.startswith("mtp.")]
    assert len(mtp) > 20 and sum(t.nbytes for t in mtp) > 100_000
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path)
    types = {name: qtype for name, _, qtype, _ in result.tensors}
    assert types["blk.0.ffn_gate_tid2eid.weight"] == "I32" and types["blk.3.ffn_up_exps.weight"] == "MXFP4"
    assert not any("nextn" in n or n.startswith("blk.4.") for n in types)

    lfs = "/lfs/" + hashlib.sha256(blob).hexdigest()
    reads = []
    for e in fresh_hub.log:
        if e["path"] == lfs and e["status"] == 206:
            first, last = (int(x) for x in e["range"].removeprefix("bytes=").split("-"))
            reads.append((first, last + 1))
    assert reads
    header_end = 8 + int.from_bytes(blob[:8], "little")
    for t in mtp:
        for start, end in reads:
            if start == 0 and end <= max(header_end, 100_000):
                continue  # the header read (its first 100 KB may run into data: not a tensor fetch)
            assert end <= t.start or start >= t.end, f"{t.name} was fetched ({start}-{end})"


def test_every_outtype_writes_fp8_layers_q8_0_and_experts_mxfp4(fixture_root, tmp_path):
    """The reference keeps each tensor in its source's kind whatever --outtype says: the f32 and bf16
    files are the same bytes, FP8 layers Q8_0 (F16 where a row does not split into 32s), experts MXFP4,
    bf16 matrices BF16, and the file type MOSTLY_MXFP4_MOE."""
    files = {}
    for outtype in ("f32", "bf16"):
        out = tmp_path / outtype
        out.mkdir()
        result = hfstream.convert(str(snapshot_dir(fixture_root / REPO)), outtype=outtype, outfile=out)
        assert result.path.name.endswith("-MXFP4_MOE.gguf")
        files[outtype] = result.path.read_bytes()
    assert files["f32"] == files["bf16"]
    reader = gguf.GGUFReader(tmp_path / "f32" / result.path.name)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_kv.weight"] == QT.Q8_0 and types["blk.0.attn_q_b.weight"] == QT.F16  # 40 wide
    assert types["blk.2.ffn_gate_exps.weight"] == QT.MXFP4 and types["blk.1.ffn_gate_tid2eid.weight"] == QT.I32
    assert types["token_embd.weight"] == QT.BF16 and types["blk.0.ffn_gate_inp.weight"] == QT.BF16
    assert types["blk.0.hc_attn_fn.weight"] == QT.F32 and "blk.0.exp_probs_b.bias" not in types  # hash layer
    ftype = reader.fields["general.file_type"]
    assert int(ftype.parts[ftype.data[0]][0]) == gguf.LlamaFileType.MOSTLY_MXFP4_MOE


def _copy(fixture_root: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "DeepSeek-V4-Flash"
    shutil.copytree(snapshot_dir(fixture_root / REPO), repo)
    return repo


def test_a_repo_without_a_chat_template_is_refused_in_one_line(fixture_root, tmp_path, capsys):
    """DeepSeek's V4 releases ship no Jinja template; the reference then writes the template bundled
    with llama.cpp, which hfstream does not carry: refused before anything is written, saying how to
    give one."""
    repo = _copy(fixture_root, tmp_path)
    tok_config = json.loads((repo / "tokenizer_config.json").read_text())
    del tok_config["chat_template"]
    (repo / "tokenizer_config.json").write_text(json.dumps(tok_config))
    out = tmp_path / "out"
    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedTokenizerError.exit_code
    assert len(err) == 1 and "chat template" in err[0] and "DeepseekV4ForCausalLM" in err[0], err
    assert "--chat-template FILE" in err[0]  # what to do about it (tests/test_chat_template.py does it)
    assert not out.exists() or not any(out.iterdir())


def test_a_k_quant_mix_is_refused_in_one_line(fixture_root, tmp_path, capsys):
    repo = _copy(fixture_root, tmp_path)
    rc = cli.main(["convert", str(repo), "--outtype", "q4_k_m", "-o", str(tmp_path / "out.gguf"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedOptionError.exit_code
    assert len(err) == 1 and "q4_k_m" in err[0] and "DeepSeek-V4" in err[0], err
    assert not list(tmp_path.glob("out.gguf*"))


def test_an_expert_without_its_scale_is_refused_in_one_line(fixture_root, tmp_path, capsys):
    """The reference repacks experts from weight + scale only (no dequantized path): an expert whose
    scale is missing from the checkpoint is an error naming it."""
    repo = _copy(fixture_root, tmp_path)
    index = json.loads((repo / "model.safetensors.index.json").read_text())
    shard = repo / index["weight_map"]["layers.2.ffn.experts.5.w2.scale"]
    blob = shard.read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    header["layers.2.ffn.experts.5.w2.scalf"] = header.pop("layers.2.ffn.experts.5.w2.scale")
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    shard.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + header_len:])
    del index["weight_map"]["layers.2.ffn.experts.5.w2.scale"]
    index["weight_map"]["layers.2.ffn.experts.5.w2.scalf"] = shard.name
    (repo / "model.safetensors.index.json").write_text(json.dumps(index))
    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "-o", str(tmp_path / "out.gguf"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.InvalidHeaderError.exit_code
    assert len(err) == 1 and "layers.2.ffn.experts.5.w2.scale" in err[0], err


@pytest.mark.parametrize("key, value, tensor", [("hc_mult", 2, "layers.0.hc_attn_base"), ("compress_ratios", [0, 128, 128, 4, 0],
                                                                                  "layers.1.attn.compressor.ape")])
def test_shapes_config_json_fixes_beyond_the_rule_table_are_checked(key, value, tensor, fixture_root, tmp_path, capsys):
    """A config that disagrees with the hyper-connection mixers or the compressors is one line before any
    weight byte is read (not a GGUF llama.cpp would refuse)."""
    repo = _copy(fixture_root, tmp_path)
    config = json.loads((repo / "config.json").read_text())
    config[key] = value
    (repo / "config.json").write_text(json.dumps(config))
    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "-o", str(tmp_path / "out.gguf"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.ConfigMismatchError.exit_code
    assert len(err) == 1 and tensor in err[0] and "config.json makes it" in err[0], err
