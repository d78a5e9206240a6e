"""The paths other platforms take, run here: every Linux-only path switched off gives the same bytes.

Only Linux x86-64 runs hfstream's fast paths (``settings.LINUX_PATHS``: forked helpers, O_DIRECT,
posix_fallocate, sync_file_range, copy_file_range, the AVX2 Q8_0 and K-quant encoders, ggml-cpu's
F16C conversions, malloc_trim); macOS and Windows take each one's fallback. ``HFSTREAM_PORTABLE``
switches them off one by one or all at once. The first tests show that each switch really turns
its path off (the fallback is the one called); the last ones convert fixture models end to end
with all of them off, with spies on every Linux-only primitive, against the reference's goldens.
(``HFSTREAM_PORTABLE=all python -m pytest tests/test_convert.py`` runs every golden case that way.)
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hfstream import cli, errors, forked, hub, settings, writer
from hfstream.quant import encode as quant
from hfstream.quant import floats
from hfstream.localdir import LocalSource, local_snapshot

from .goldens.cases import cases
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

RNG = np.random.default_rng(15)


def _off(monkeypatch, *names: str) -> None:
    monkeypatch.setenv("HFSTREAM_PORTABLE", ",".join(names) or "all")


def test_the_switch_names_every_path_and_refuses_an_unknown_one(monkeypatch):
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    assert all(settings.linux_path(name) for name in settings.LINUX_PATHS)
    _off(monkeypatch, "fork", "o_direct")
    assert [n for n in settings.LINUX_PATHS if not settings.linux_path(n)] == ["fork", "o_direct"]
    _off(monkeypatch)
    assert not any(settings.linux_path(name) for name in settings.LINUX_PATHS)
    monkeypatch.setenv("HFSTREAM_PORTABLE", "fork,o_direkt")
    with pytest.raises(errors.UnsupportedOptionError, match="o_direkt"):
        settings.linux_path("fork")


# -- each switch turns its path off --------------------------------------------------------------------


def test_fork_off_no_helper_process(monkeypatch):
    if not forked.available():
        pytest.skip("no fork on this platform: the fallback is all there is")
    _off(monkeypatch, "fork")
    assert not forked.available()
    args = cli.build_parser().parse_args(["convert", "org/model"])
    asked = hub.parse_source(args.repo, "https://huggingface.co")
    assert cli._start_resolving(asked, args) is None  # the CLI resolves in-process, when the pipeline asks


def _spy(monkeypatch, owner, name: str) -> list:
    """Record the calls of ``owner.name`` (still calling it)."""
    real = getattr(owner, name)
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _write_big(path: Path) -> bytes:
    data = RNG.integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    out = writer.OutputFile(path, len(data) + 100)
    out.pwrite(data, 100)
    out.commit()
    return data


def test_o_direct_off_big_writes_go_through_the_page_cache(tmp_path, monkeypatch):
    direct = _spy(monkeypatch, writer.OutputFile, "_direct")
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    _write_big(tmp_path / "on.gguf")
    if not direct:
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT: nothing to switch off")
    direct.clear()
    _off(monkeypatch, "o_direct")
    data = _write_big(tmp_path / "off.gguf")
    assert direct == []
    assert (tmp_path / "off.gguf").read_bytes()[100:] == data


def test_fallocate_off_the_output_is_a_sparse_file(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    calls = _spy(monkeypatch, writer.os, "posix_fallocate")
    truncates = _spy(monkeypatch, writer.os, "ftruncate")
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    writer.OutputFile(tmp_path / "on.gguf", 1000).abort()
    assert len(calls) == 1 and truncates == []
    _off(monkeypatch, "fallocate")
    out = writer.OutputFile(tmp_path / "off.gguf", 1000)
    assert len(calls) == 1 and len(truncates) == 1
    assert os.path.getsize(out.path) == 1000
    out.abort()


def test_sync_file_range_off_writeback_waits_for_the_fsync(tmp_path, monkeypatch):
    if writer._SYNC_FILE_RANGE is None:
        pytest.skip("no sync_file_range on this platform")
    calls = _spy(monkeypatch, writer, "_SYNC_FILE_RANGE")
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    _write_big(tmp_path / "on.gguf")
    assert calls
    calls.clear()
    _off(monkeypatch, "sync_file_range")
    data = _write_big(tmp_path / "off.gguf")
    assert calls == []
    assert (tmp_path / "off.gguf").read_bytes()[100:] == data


def test_copy_file_range_off_a_local_source_reads_and_the_caller_writes(tmp_path, monkeypatch):
    if not hasattr(os, "copy_file_range"):
        pytest.skip("no copy_file_range on this platform")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.safetensors").write_bytes(bytes(range(256)) * 16)
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
    calls = _spy(monkeypatch, os, "copy_file_range")
    try:
        monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
        assert LocalSource(local_snapshot(tmp_path / "src")).copy_to("w.safetensors", 10, 100, out, 0) is True
        assert len(calls) == 1
        _off(monkeypatch, "copy_file_range")
        assert LocalSource(local_snapshot(tmp_path / "src")).copy_to("w.safetensors", 10, 100, out, 0) is False
        assert len(calls) == 1
    finally:
        os.close(out)


def test_q8_0_avx2_off_ggml_encodes_q8_0_with_the_same_bytes(monkeypatch):
    if quant._KERNEL is None or quant.default_engine() != "ggml":
        pytest.skip("the compiled Q8_0 encoder is not in use here")
    calls = _spy(monkeypatch, quant._KERNEL, "quantize")
    ggml = _spy(monkeypatch, quant, "_ggml_quantize")
    x = (RNG.standard_normal((8, 256)) * 0.02).astype(np.float32)
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    fast = quant.quantize(x, QT.Q8_0).tobytes()
    assert len(calls) == 1 and ggml == []
    _off(monkeypatch, "q8_0_avx2")
    assert not quant.compiled_q8_0()
    assert quant.quantize(x, QT.Q8_0).tobytes() == fast
    assert len(calls) == 1 and len(ggml) == 1


def test_kquants_avx2_off_ggml_encodes_the_k_quants_with_the_same_bytes(monkeypatch):
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    if quant._KQUANTS is None or quant.default_engine() != "ggml" or not quant.compiled_kquants():
        pytest.skip("the compiled K-quant encoders are not in use here")
    calls = _spy(monkeypatch, quant._KQUANTS, "quantize")
    ggml = _spy(monkeypatch, quant, "_ggml_quantize")
    x = (RNG.standard_normal((8, 512)) * 0.02).astype(np.float32)
    weights = quant.Weights(RNG.random((1, 512)).astype(np.float32), 8)
    fast = [quant.quantize(x, qt, weights=w).tobytes() for qt in quant.KQUANT_TYPES for w in (None, weights)]
    assert len(calls) == 6 and ggml == []
    _off(monkeypatch, "kquants_avx2")
    assert not quant.compiled_kquants()
    assert [quant.quantize(x, qt, weights=w).tobytes() for qt in quant.KQUANT_TYPES for w in (None, weights)] == fast
    assert len(calls) == 6 and len(ggml) == 6


def test_f16c_off_numpy_converts_floats_with_the_same_bits(monkeypatch):
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    if floats.engine() != "ggml-cpu":
        pytest.skip("ggml-cpu's float routines are not in use here")
    lib = floats._lib()
    calls = _spy(monkeypatch, lib, "ggml_cpu_fp32_to_fp16")
    x = RNG.standard_normal(4096).astype(np.float32)
    fast = floats.f32_to_f16(x)
    assert len(calls) == 1
    _off(monkeypatch, "f16c")
    assert floats.engine() == "numpy"
    slow = floats.f32_to_f16(x)
    assert len(calls) == 1
    assert slow.tobytes() == fast.tobytes() == x.astype(np.float16).tobytes()


def test_malloc_trim_off_nothing_is_asked_of_libc(monkeypatch):
    from hfstream import pipeline

    opened = []
    real = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        opened.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.delenv("HFSTREAM_PORTABLE", raising=False)
    pipeline._return_freed_memory()
    if not opened:
        pytest.skip("no glibc here")
    opened.clear()
    _off(monkeypatch, "malloc_trim")
    pipeline._return_freed_memory()
    assert opened == []


# -- end to end, every path off ------------------------------------------------------------------------


@pytest.fixture
def portable(monkeypatch):
    """Every Linux-only path switched off, and a spy on each of their primitives: the list of those
    called anyway (a spy also fails the call, in case a caller ignores what it returns)."""
    _off(monkeypatch)
    called: list[str] = []

    def forbid(owner, name: str, what: str, allowed=None):
        real = getattr(owner, name)

        def spy(*args, **kwargs):
            if allowed is not None and allowed(*args, **kwargs):
                return real(*args, **kwargs)
            called.append(what)
            raise AssertionError(f"{what} used with HFSTREAM_PORTABLE=all")

        monkeypatch.setattr(owner, name, spy)

    forbid(os, "fork", "fork")
    if hasattr(os, "posix_fallocate"):
        forbid(os, "posix_fallocate", "posix_fallocate")
    if hasattr(os, "copy_file_range"):
        forbid(os, "copy_file_range", "copy_file_range")
    if writer._O_DIRECT:
        # os.open with O_DIRECT only; every other open goes through
        forbid(os, "open", "O_DIRECT", allowed=lambda path, flags, *a, **k: not flags & writer._O_DIRECT)
    monkeypatch.setattr(writer, "_SYNC_FILE_RANGE", lambda *a: called.append("sync_file_range"))
    if quant._KERNEL is not None:
        class Kernel:
            @staticmethod
            def quantize(src, dst):
                called.append("q8_0_avx2")
                raise AssertionError("the compiled Q8_0 encoder used with HFSTREAM_PORTABLE=all")

        monkeypatch.setattr(quant, "_KERNEL", Kernel)
    if quant._KQUANTS is not None:
        class KQuants:
            @staticmethod
            def quantize(*args):
                called.append("kquants_avx2")
                raise AssertionError("the compiled K-quant encoders used with HFSTREAM_PORTABLE=all")

        monkeypatch.setattr(quant, "_KQUANTS", KQuants)

    class Lib:  # what floats would call if its switch did not hold
        def __getattr__(self, name):
            called.append("f16c")
            raise AssertionError("ggml-cpu's float routines used with HFSTREAM_PORTABLE=all")

    monkeypatch.setattr(floats, "_LIB", Lib())
    monkeypatch.setattr(floats, "_TRIED", True)
    real_cdll = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if name == "libc.so.6":
            called.append("malloc_trim")
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    return called


#: between them they reach every switched path: a bf16 source to Q8_0 (the compiled encoder, F16C
#: bf16 widening, big writes of a 128k-token embedding, the CLI's resolving child and the vocabulary
#: child); f32 shards to f16 (F16C narrowing); an f16 source to Q8_0 (F16C widening)
PORTABLE_CASES = ["tiny-llama-bpe.q8_0", "tiny-llama-sharded.f16", "tiny-gemma3.q8_0"]


@pytest.mark.parametrize("name", PORTABLE_CASES)
def test_a_hub_conversion_with_every_linux_path_off_gives_the_references_bytes(
        name, portable, fresh_hub, tmp_path, capsys):
    (case,) = [c for c in cases() if c.golden_name == name]
    rc = cli.main(["convert", case.repo_id, "--outtype", case.outtype, "-o", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert portable == []
    (written,) = tmp_path.glob("*.gguf")
    assert diff_digests(comparable(case.golden()), comparable(digest_gguf(written))) == []


def test_a_local_raw_copy_with_every_linux_path_off_gives_the_references_tensors(portable, fixture_root, tmp_path):
    """f16 from an f16 source, from a local directory: on Linux each tensor that is a unit of its own
    (a small budget makes most of them so) is copied file to file; here it is read and written."""
    import hfstream

    (case,) = [c for c in cases() if c.golden_name == "tiny-llama-spm.f16"]
    model = tmp_path / "tiny-llama-spm"
    shutil.copytree(fixture_root / case.repo_id / "commits" / _sha(fixture_root, case.repo_id), model)
    result = hfstream.convert(str(model), outtype="f16", outfile=tmp_path / "out.gguf", max_memory=64 * 1024)
    assert portable == []
    ours = digest_gguf(result.path)
    assert [(t["name"], t["sha256"]) for t in ours["tensors"]] == \
        [(t["name"], t["sha256"]) for t in case.golden()["tensors"]]


def _sha(fixture_root: Path, repo_id: str) -> str:
    import json

    return json.loads((fixture_root / repo_id / "repo.json").read_text())["refs"]["main"]


def test_a_q4_k_m_conversion_with_every_linux_path_off_gives_llama_quantizes_bytes(
        portable, fresh_hub, tmp_path, capsys, monkeypatch):
    """ggml encodes every K-quant (the compiled encoders are off), with and without an importance matrix."""
    from .test_kquant import check_case

    for cid in ("q4_k_m", "q4_k_m+imatrix"):
        (tmp_path / cid).mkdir()
        check_case("tiny-mixtral-k", cid, tmp_path / cid, capsys, monkeypatch)
    assert portable == []
