"""One run, several outtypes (issue 20 part 3): one file per type, each byte-identical to its own
single-type run, every source byte fetched once, the memory budget shared, each file resumable alone."""

from __future__ import annotations

import hashlib
import json

import pytest

import hfstream
from hfstream import cli, errors, execute

from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable
from .test_kquant import GOLDENS as KQUANT, expand, ours

MOE = "hfs-test/tiny-qwen3-moe"
K_MODEL = "tiny-llama-k"


def _golden(repo: str, outtype: str) -> dict:
    from .conftest import golden

    return golden(f"{repo.split('/')[1]}.{outtype}")


def _shard_blobs() -> set[str]:
    """The storage paths of every fixture safetensors file (a blob is named by its sha256)."""
    from fixtures.build import DEFAULT_ROOT

    return {"/lfs/" + hashlib.sha256(p.read_bytes()).hexdigest()
            for p in DEFAULT_ROOT.glob("*/*/commits/*/*.safetensors")}


def _data_ranges(hub) -> list[tuple[str, int, int]]:
    """(blob, first, last) of every range of a safetensors file past its first bytes (header reads start
    at 0; other files, e.g. a big tokenizer.json, may be read in several ranges too)."""
    shards = _shard_blobs()
    out = []
    for e in hub.log:
        if (e["origin"] == "storage" and e["path"] in shards and e["range"]
                and not e["range"].startswith("bytes=0-")):
            a, b = (int(x) for x in e["range"].removeprefix("bytes=").split("-"))
            out.append((e["path"], a, b))
    return out


def test_four_outtypes_in_one_pass_are_each_their_golden_and_fetch_each_byte_once(fresh_hub, tmp_path):
    single = hfstream.convert(MOE, outtype="q8_0", outfile=tmp_path / "single.gguf")
    single_ranges = _data_ranges(fresh_hub)
    fresh_hub.clear_log()

    out = tmp_path / "out"
    out.mkdir()
    result = hfstream.convert(MOE, outtype="f32,f16,bf16,q8_0", outfile=out, max_memory="4M")
    assert [o.outtype for o in result.outputs] == ["f32", "f16", "bf16", "q8_0"]
    for o in result.outputs:
        expected = _golden(MOE, o.outtype.lower())
        assert o.path.name == expected["default_name"] and o.paths == [o.path]
        assert diff_digests(comparable(expected), comparable(digest_gguf(o.path))) == []
        assert o.output_size == o.path.stat().st_size and o.bytes_written > 0
    # the first output's fields are the result's own, as for a single outtype
    assert (result.path, result.outtype, result.tensor_count) == (result.outputs[0].path, "f32",
                                                                   result.outputs[0].tensor_count)
    # every source byte once: no data byte asked twice, and no more of them than for one outtype
    ranges = _data_ranges(fresh_hub)
    seen: dict[str, list[tuple[int, int]]] = {}
    for path, a, b in ranges:
        for c, d in seen.get(path, []):
            assert b < c or a > d, f"bytes {a}-{b} of {path} fetched twice"
        seen.setdefault(path, []).append((a, b))
    assert sum(b - a + 1 for _, a, b in ranges) <= sum(b - a + 1 for _, a, b in single_ranges)
    assert result.bytes_fetched == single.bytes_fetched
    # one budget for all four: what was held at once stayed near it (a lone unit may exceed it)
    assert 0 < result.peak_bytes_in_flight <= 4 << 20


def test_k_quants_and_the_converter_types_together(fresh_hub, tmp_path, capsys, monkeypatch):
    """q8_0 (the converter's rule) and two llama-quantize mixes (their order and keys) from one pass."""
    golden = KQUANT[K_MODEL]
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", golden["repo"], "--outtype", "q4_k_m,q8_0,q6_k", "-o", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(".gguf" in line for line in lines)
    by_type = {p.name.rsplit("-", 1)[1].removesuffix(".gguf"): p for p in out.glob("*.gguf")}
    assert set(by_type) == {"Q4_K_M", "Q8_0", "Q6_K"}
    for cid in ("q4_k_m", "q6_k"):
        expected = expand(golden, cid)
        assert diff_digests(expected, ours(by_type[cid.upper()], golden["sha_hex_digits"]), limit=50) == []
    alone = tmp_path / "alone"
    alone.mkdir()
    assert cli.main(["convert", golden["repo"], "--outtype", "q8_0", "-o", str(alone), "-q"]) == 0
    (single,) = alone.glob("*.gguf")
    assert single.read_bytes() == by_type["Q8_0"].read_bytes()  # the same file as a run of its own


def test_a_template_names_each_file(fresh_hub, tmp_path):
    result = hfstream.convert(MOE, outtype=["f16", "q8_0"], outfile=tmp_path / "moe-{ftype}.gguf")
    assert [o.path.name for o in result.outputs] == ["moe-f16.gguf", "moe-q8_0.gguf"]


@pytest.mark.parametrize("outfile, words", [
    ("plain.gguf", ["writes 2 files", "-o must be a directory", "{ftype}"]),
])
def test_several_outtypes_need_a_directory_or_a_template(fresh_hub, tmp_path, capsys, outfile, words):
    rc = cli.main(["convert", MOE, "--outtype", "f16,q8_0", "-o", str(tmp_path / outfile), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedOptionError.exit_code
    assert len(err.strip().splitlines()) == 1 and all(w in err for w in words)
    assert list(tmp_path.iterdir()) == [] and _data_ranges(fresh_hub) == []


def test_two_types_that_land_on_one_path_are_refused(fresh_hub, tmp_path, capsys):
    """auto is bf16 for this bf16 checkpoint: both would be the -BF16 file."""
    rc = cli.main(["convert", MOE, "--outtype", "auto,bf16", "-o", str(tmp_path), "-q"])
    assert rc == errors.UnsupportedOptionError.exit_code
    assert "both be written to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_type_named_twice_or_unknown_is_refused_before_the_hub_is_asked(fresh_hub, tmp_path, capsys):
    with pytest.raises(errors.UnsupportedOptionError, match="named twice"):
        hfstream.convert(MOE, outtype="q8_0,q8_0", outfile=tmp_path)
    rc = cli.main(["convert", MOE, "--outtype", "q8_0,q9_z", "-o", str(tmp_path), "-q"])
    assert rc == errors.UnsupportedOptionError.exit_code
    assert "q9_z" in capsys.readouterr().err
    assert fresh_hub.log == []


def test_an_interrupted_run_resumes_every_file_on_its_own(fresh_hub, tmp_path, monkeypatch):
    """Interrupted after a few units: each output keeps its .part and journal; the rerun does only
    what each one lacks and gives the goldens."""
    out = tmp_path / "out"
    out.mkdir()
    real_write = execute._write
    written = []

    def write_then_stop(u, encoded, outs):
        if len(written) == 12:
            raise KeyboardInterrupt
        written.append(u.file)
        real_write(u, encoded, outs)

    monkeypatch.setattr(execute, "_write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        hfstream.convert(MOE, outtype="f16,q8_0", outfile=out, max_memory="1M", threads=1)
    assert len(set(written)) == 2, "both outputs had units written before the interrupt"
    assert len(list(out.glob("*.part"))) == 2 and not list(out.glob("*.gguf"))
    monkeypatch.setattr(execute, "_write", real_write)

    fresh_hub.clear_log()
    result = hfstream.convert(MOE, outtype="f16,q8_0", outfile=out, max_memory="1M")
    for o in result.outputs:
        assert 0 < o.units_resumed < o.units_total
        expected = _golden(MOE, o.outtype.lower())
        assert diff_digests(comparable(expected), comparable(digest_gguf(o.path))) == []
    assert not list(out.glob("*.part")) and not list(out.glob("*.journal"))


def test_a_dry_run_plans_every_output(fresh_hub, tmp_path, capsys):
    rc = cli.main(["convert", MOE, "--outtype", "f16,q4_k_m", "--dry-run", "-o", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.count("would fetch") == 2 and "-F16.gguf" in text and "-Q4_K_M.gguf" in text
    assert list(tmp_path.iterdir()) == [] and _data_ranges(fresh_hub) == []


def test_the_same_rows_of_several_outputs_are_evaluated_once(monkeypatch):
    """Units of several outputs that read the same rows through equal graphs quantize one array: the
    source rows are decoded (here: BF16, q/k-permuted) once per block, not once per output, and every
    output's bytes are those of its unit encoded alone."""
    import numpy as np
    from gguf import GGMLQuantizationType as QT

    from hfstream import graph, quant
    from hfstream.plan import PlannedTensor
    from hfstream.safetensors import SourceTensor
    from hfstream.units import units_for

    rows, cols = 64, 256
    src = SourceTensor("m.safetensors", "q", "BF16", (rows, cols), 0, rows * cols * 2)
    raw = (np.random.default_rng(3).standard_normal(rows * cols).astype(np.float32).view("<u4") >> 16
           ).astype("<u2").tobytes()
    tensors = [PlannedTensor("q", graph.PermuteHeads(graph.Load(src), 4), qt, (rows, cols), quant.nbytes(qt, (rows, cols)))
               for qt in (QT.Q8_0, QT.Q4_K, QT.Q6_K)]  # three plans: equal graphs, distinct nodes
    cut = [units_for(t, 0, 40_000, same_cut_for_any_type=True) for t in tensors]
    assert len(cut[0]) > 1 and all(len(c) == len(cut[0]) for c in cut)
    batch = [units[i] for i in range(len(cut[0])) for units in cut]  # each block's rows, output by output
    data = {s: raw[s.start:s.end] for u in batch for s in u.spans}
    alone = [execute._encode_all([u], data)[0].tobytes() for u in batch]

    evaluated = []
    real = graph.PermuteHeads.eval_rows
    monkeypatch.setattr(graph.PermuteHeads, "eval_rows",
                        lambda self, d, r0, r1: evaluated.append((r0, r1)) or real(self, d, r0, r1))
    together = [b.tobytes() for b in execute._encode_all(batch, data)]
    assert together == alone
    assert evaluated == [(u.r0, u.r1) for u in cut[0]]
