"""llama-quantize types (K-quants, IQ types and their mixes): hfstream's one-pass output against what
llama.cpp's ``llama-quantize`` writes from the reference converter's F32 file.

The goldens (``tests/goldens/kquant/{model}.json``, made by ``tests/goldens/make_kquant_goldens.py``)
hold, per fixture model and case (type, with or without the synthetic imatrix, type overrides), the
keys, the tensors in llama-quantize's order, their types and a 64-bit prefix of each tensor's
sha256; or the refusal when the type needs an importance matrix and none was given.

- fast: every case's types from ``mixes.choose_types`` (pure, no data), every refusal through the
  CLI, every case of the small 64-wide model (where the 256-block types fall back), for the
  256-wide models a selection that converts every type at least once (some with the legacy .dat
  imatrix, the MoE with per-expert imatrix slices and row blocks smaller than an expert), and one
  case of each MoE family whose experts are stored another way;
- slow: every case byte for byte, and each output loaded and greedy-decoded by llama.cpp (an
  encoder's: its embeddings of the goldens' texts).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from hfstream import cli, errors, quant
from hfstream.quant import ggml, mixes
from hfstream.quant.imatrix import KV_FILE
from hfstream.plan import KEY_SOURCE_COMMIT, KEY_SOURCE_REPO

from . import llamacpp
from .goldens.digest import diff_digests, digest_gguf

KQUANT = Path(__file__).resolve().parent / "goldens" / "kquant"
IMATRIX_DIR = KQUANT / "imatrix"
GOLDENS = {p.stem: json.loads(p.read_text()) for p in sorted(KQUANT.glob("*.json"))}
OUR_KEYS = (KEY_SOURCE_REPO, KEY_SOURCE_COMMIT)
SMALL_MODELS = ("tiny-llama-spm",)
#: import llama.cpp now, at collection: once libggml-python's libggml-base.so.0 is loaded (by the first
#: quantization), libllama.so's own dependency of that name would resolve to it and fail to load
LLAMA_CPP = llamacpp.available()

pytestmark = pytest.mark.skipif(not GOLDENS, reason="no K-quant goldens (python -m tests.goldens.make_kquant_goldens)")

#: cases converted in the fast suite, of the 256-wide models: every type at least once (checked below).
#: (model, case id, imatrix format)
FAST_K_CASES: tuple[tuple[str, str, str], ...] = (
    ("tiny-qwen3-k", "iq2_xxs+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq2_xs+imatrix", "dat"),
    ("tiny-qwen3-k", "iq2_s+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq2_m+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq1_s+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq1_m+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq3_xxs+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq3_xs+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq3_s", "gguf"),
    ("tiny-qwen3-k", "iq3_m+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq4_nl+imatrix", "gguf"),
    ("tiny-qwen3-k", "iq4_xs", "gguf"),
    ("tiny-qwen3-k", "q2_k_s+imatrix", "gguf"),
    ("tiny-qwen3-k", "tq1_0", "gguf"),
    ("tiny-qwen3-k", "tq2_0", "gguf"),
    ("tiny-qwen3-k", "q5_1+imatrix", "gguf"),
    ("tiny-qwen3-k", "q3_k_m+overrides", "gguf"),
    ("tiny-llama-k", "q4_0+imatrix", "gguf"),
    ("tiny-llama-k", "q3_k_m", "gguf"),
    ("tiny-llama-k", "q4_k_m", "gguf"),
    ("tiny-llama-k", "q4_k_s", "gguf"),
    ("tiny-llama-k", "q5_k_m", "gguf"),
    ("tiny-llama-k", "q6_k", "gguf"),
    ("tiny-llama-k", "q2_k", "gguf"),
    ("tiny-llama-k", "q4_k_m+overrides", "gguf"),
    ("tiny-mixtral-k", "q4_k_m+imatrix", "dat"),
    ("tiny-mixtral-k", "q3_k_l", "gguf"),
    ("tiny-mixtral-k", "q3_k_s", "gguf"),
    ("tiny-mixtral-k", "q5_k_s+imatrix", "gguf"),
    ("tiny-mixtral-k", "q5_0", "gguf"),
    ("tiny-mixtral-k", "q4_1", "gguf"),
    # gpt-oss (bf16 experts transposed and de-interleaved, 64-wide rows: the fallback types)
    ("tiny-gpt-oss-bf16", "q4_k_m+imatrix", "gguf"),
    ("tiny-deepseek-v3-k", "q4_k_m+imatrix", "gguf"),  # FP8 source, MLA, 8 experts (all its cases: slow suite)
    # Gemma 4's fused 3-D experts (gate_up) with their imatrix slices; Gemma 3n's per-layer embedding
    # (1024 wide) and AltUp stacks
    ("tiny-gemma4", "q4_k_m+imatrix", "gguf"),
    ("tiny-gemma3n", "q4_k_m", "gguf"),
    ("tiny-gemma3n", "iq2_xxs+imatrix", "dat"),
    # hybrids: Mamba-2 mixers (ssm_in/out, the F32 conv and A/D), short convolutions, stacked and split experts
    ("tiny-nemotron-h-k", "q4_k_m", "gguf"),
    ("tiny-granite4-k", "q4_k_m+imatrix", "gguf"),
    ("tiny-lfm2-moe-k", "q4_k_m+imatrix", "dat"),
    ("tiny-phimoe", "q4_k_m+imatrix", "gguf"),  # biases, LongRoPE tensors, experts with their imatrix slices
)

#: hybrid (gated delta net + attention) MoE models, 64 wide: the mix's rules on ssm_*, attn_qkv/attn_gate,
#: nextn and expert tensors, their fallbacks, and per-expert imatrix slices of stacked and fused experts
HYBRID_CASES: tuple[tuple[str, str], ...] = tuple(
    (model, cid) for model in ("tiny-qwen3-next", "tiny-qwen35-moe-vlm") for cid in ("q4_k_m", "q4_k_m+imatrix")
    if model in GOLDENS)


#: MoE families whose experts arrive in other layouts (one tensor per expert, GraniteMoE's fused gate/up
#: cut into two stacks, ERNIE's dense first layer and shared experts; DeepSeek-V3.2's kept MTP block), 64-wide: the K types fall back.
#: With the imatrix, each expert's rows take their expert's slice. (model, case id)
MOE_LAYOUT_CASES: tuple[tuple[str, str], ...] = (
    ("tiny-olmoe", "q4_k_m"),
    ("tiny-granite-moe", "q4_k_m+imatrix"),
    ("tiny-ernie4_5-moe", "q4_k_m+imatrix"),
    ("tiny-deepseek-v32", "q4_k_m+imatrix"),  # FP8, the indexer's and the MTP block's tensors
)

#: encoders (embedding models), 64-wide: no output tensor, position and token-type tables, fused qkv and
#: GLU projections under the mix's rules. (model, case id)
ENCODER_CASES: tuple[tuple[str, str], ...] = tuple(
    (model, "q4_k_m+imatrix") for model in ("tiny-bert", "tiny-xlm-roberta", "tiny-embeddinggemma", "tiny-modernbert")
    if model in GOLDENS)


# --------------------------------------------------------------------------- helpers


def cases(models=None, *, errors_only: bool | None = None) -> list[tuple[str, str]]:
    out = []
    for model, g in GOLDENS.items():
        if models is not None and model not in models:
            continue
        for cid, case in g["cases"].items():
            if errors_only is None or errors_only == ("error" in case):
                out.append((model, cid))
    return out


def expand(golden: dict, cid: str, imatrix_file: str | None = None) -> dict:
    """The digest (kv + tensors, sha256 prefixes) llama-quantize's output of one case has."""
    case = golden["cases"][cid]
    tail = [list(e) for e in case["kv_tail"]]
    if imatrix_file is not None:
        tail = [[k, t, imatrix_file if k == KV_FILE else v] for k, t, v in tail]
    tensors, offset = [], 0
    for (name, shape), qtype, sha in zip(golden["tensors"], case["types"], case["sha"]):
        nbytes = mixes_nbytes(qtype, shape)
        tensors.append({"name": name, "shape": shape, "type": qtype, "offset": offset, "nbytes": nbytes,
                        "sha256": sha})
        offset += -(-nbytes // 32) * 32
    return {"kv": golden["kv"] + tail, "tensors": tensors}


def mixes_nbytes(type_name: str, ne: list[int]) -> int:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    n = 1
    for d in ne:
        n *= d
    return n // block * size


def ours(path: Path, hex_digits: int) -> dict:
    d = digest_gguf(path)
    return {"kv": [e for e in d["kv"] if e[0] not in OUR_KEYS],
            "tensors": [{**t, "sha256": t["sha256"][:hex_digits]} for t in d["tensors"]]}


def case_args(golden: dict, cid: str, imatrix_format: str = "gguf") -> tuple[list[str], str | None]:
    """hfstream options for a case (llama-quantize's spellings are ours) and the imatrix file named."""
    case = golden["cases"][cid]
    opts = list(case["options"])
    imatrix_file = None
    if "--imatrix" in opts:
        i = opts.index("--imatrix")
        imatrix_file = golden["imatrix"][imatrix_format]
        opts[i + 1] = imatrix_file
    return ["--outtype", case["type"], *opts], imatrix_file


def run_case(model: str, cid: str, tmp_path: Path, capsys, monkeypatch, imatrix_format: str = "gguf"):
    """Convert one case through the CLI against the fixture Hub, in the imatrix directory (so the
    imatrix is named as llama-quantize was given it). Returns (exit code, stderr, output path)."""
    golden = GOLDENS[model]
    args, imatrix_file = case_args(golden, cid, imatrix_format)
    monkeypatch.chdir(IMATRIX_DIR)
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", golden["repo"], *args, "-o", str(out), "-q"])
    err = capsys.readouterr().err
    written = list(out.glob("*.gguf"))
    return rc, err, (written[0] if written else None), imatrix_file


def check_case(model: str, cid: str, tmp_path: Path, capsys, monkeypatch, imatrix_format: str = "gguf",
               allow_old_iq1_m: bool = False) -> Path:
    golden = GOLDENS[model]
    rc, err, path, imatrix_file = run_case(model, cid, tmp_path, capsys, monkeypatch, imatrix_format)
    assert rc == 0, err
    label = mixes.MIXES[golden["cases"][cid]["type"]].label
    assert path.name == golden["f32_name"].replace("-F32.gguf", f"-{label}.gguf")
    expected = expand(golden, cid, imatrix_file)
    diffs = diff_digests(expected, ours(path, golden["sha_hex_digits"]), limit=10_000)
    if diffs and allow_old_iq1_m and _only_iq1_m_data(expected, diffs):
        pytest.xfail(f"ggml {quant.ggml_version()} predates the IQ1_M search of the reference's ggml "
                     f"{REFERENCE_GGML}: {len(diffs)} IQ1_M tensor(s) differ in a few blocks (install llama-cpp-python "
                     "or set HFSTREAM_GGML_LIB)")
    assert diffs == []
    return path


#: the ggml of the llama.cpp the goldens come from (llama-cpp-python 0.3.36's vendored copy)
REFERENCE_GGML = "0.25.3"


def _only_iq1_m_data(expected: dict, diffs: list[str]) -> bool:
    """Every difference is the data of an IQ1_M tensor (types, shapes and offsets agree)."""
    iq1_m = {t["name"] for t in expected["tensors"] if t["type"] == "IQ1_M"}
    for line in diffs:
        name, _, what = line.removeprefix("tensor ").partition(": ")
        if name not in iq1_m or not what.startswith("sha256 ") or ";" in what:
            return False
    return True


def _reference_ggml_library() -> str | None:
    """llama-cpp-python's libggml-base (the goldens' ggml), when it is installed."""
    try:
        import llama_cpp
    except Exception:
        return None
    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    return str(lib) if lib.is_file() else None


# --------------------------------------------------------------------------- fast


def test_goldens_cover_every_type_and_the_fast_selection_converts_each():
    wanted = set(mixes.MIXES)
    for model, g in GOLDENS.items():
        # a golden made for a few types only (a big vocabulary makes each case slow) says which
        assert {c["type"] for c in g["cases"].values()} >= set(g.get("selected_types", wanted)), model
    big = [(m, cid) for m, cid, _ in FAST_K_CASES]
    for m, cid in big:
        assert "error" not in GOLDENS[m]["cases"][cid], (m, cid)
    assert {GOLDENS[m]["cases"][cid]["type"] for m, cid in big} == wanted
    assert {m for m, _ in big} >= {"tiny-llama-k", "tiny-qwen3-k", "tiny-mixtral-k"}
    assert {fmt for *_, fmt in FAST_K_CASES} == {"gguf", "dat"}


def test_goldens_are_from_these_fixtures(fixture_root):
    """A fixture change needs regenerated goldens (python -m tests.goldens.make_kquant_goldens)."""
    for model, g in GOLDENS.items():
        refs = json.loads((fixture_root / g["repo"] / "repo.json").read_text())["refs"]
        assert refs["main"] == g["commit"], model


def test_committed_imatrix_files_are_the_generated_ones():
    import hashlib

    for g in GOLDENS.values():
        for name, sha in g["imatrix"]["sha256"].items():
            assert hashlib.sha256((IMATRIX_DIR / name).read_bytes()).hexdigest() == sha


def _facts(golden: dict) -> mixes.ModelFacts:
    kv = {}
    for key, _, value in golden["kv"]:
        kv[key] = value["values"] if isinstance(value, dict) and "values" in value else value
    return mixes.ModelFacts.from_kv(kv)


def _overrides(options: list[str]) -> mixes.Overrides:
    tt, out, emb = [], None, None
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--tensor-type":
            tt.append(mixes.parse_tensor_type(value))
        elif flag == "--output-tensor-type":
            out = mixes.parse_type(value)
        elif flag == "--token-embedding-type":
            emb = mixes.parse_type(value)
    return mixes.Overrides(tuple(tt), out, emb)


@pytest.mark.parametrize("model", sorted(GOLDENS))
def test_every_case_chooses_llama_quantizes_types(model):
    """The rule tables against every case: the types, the order, and which cases need an imatrix."""
    golden = GOLDENS[model]
    tensors = [(name, tuple(shape)) for name, shape in golden["tensors"]]
    facts = _facts(golden)
    for cid, case in golden["cases"].items():
        mix = mixes.MIXES[case["type"]]
        has_imatrix = "--imatrix" in case["options"]
        choices = mixes.choose_types(mix, tensors, facts, _overrides(case["options"]), has_imatrix=has_imatrix)
        assert [c.name for c in choices] == [n for n, _ in tensors], cid
        needs = [c.name for c in choices
                 if c.quantized and c.qtype != gguf.GGMLQuantizationType.F32 and mixes.needs_imatrix(c.name, c.qtype, mix)]
        if "error" in case:
            assert needs and not has_imatrix, cid
        else:
            assert not needs or has_imatrix, cid
            assert [c.qtype.name for c in choices] == case["types"], cid


@pytest.mark.parametrize("model, cid", cases(errors_only=True), ids=[f"{m}:{c}" for m, c in cases(errors_only=True)])
def test_types_that_need_an_imatrix_are_refused_without_one(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    rc, err, path, _ = run_case(model, cid, tmp_path, capsys, monkeypatch)
    assert rc == errors.ImatrixRequiredError.exit_code
    assert path is None
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfstream: error: ") and "--imatrix" in lines[0]


SMALL = cases(SMALL_MODELS, errors_only=False)


@pytest.mark.parametrize("model, cid", SMALL, ids=[f"{m}:{c}" for m, c in SMALL])
def test_small_model_every_case_is_byte_identical(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    """64-wide rows: every 256-block type falls back (IQ -> IQ4_NL, Q4_K -> Q5_0, ...)."""
    check_case(model, cid, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("model, cid, fmt", FAST_K_CASES, ids=[f"{m}:{c}:{f}" for m, c, f in FAST_K_CASES])
def test_k_models_are_byte_identical(model, cid, fmt, fresh_hub, tmp_path, capsys, monkeypatch):
    check_case(model, cid, tmp_path, capsys, monkeypatch, imatrix_format=fmt)


@pytest.mark.parametrize("model, cid", MOE_LAYOUT_CASES, ids=[f"{m}:{c}" for m, c in MOE_LAYOUT_CASES])
def test_moe_layouts_are_byte_identical(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    check_case(model, cid, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("model, cid", HYBRID_CASES, ids=[f"{m}:{c}" for m, c in HYBRID_CASES])
def test_hybrid_moe_models_are_byte_identical(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    check_case(model, cid, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("model, cid", ENCODER_CASES, ids=[f"{m}:{c}" for m, c in ENCODER_CASES])
def test_encoders_are_byte_identical(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    check_case(model, cid, tmp_path, capsys, monkeypatch)


def test_moe_row_blocks_smaller_than_an_expert_take_their_experts_slice(fresh_hub, tmp_path, capsys, monkeypatch):
    """A 256 KiB budget cuts each expert into blocks of about a dozen rows; each must use its expert's values."""
    golden = GOLDENS["tiny-mixtral-k"]
    args, imatrix_file = case_args(golden, "q4_k_m+imatrix")
    monkeypatch.chdir(IMATRIX_DIR)
    rc = cli.main(["convert", golden["repo"], *args, "-o", str(tmp_path / "x.gguf"), "-q", "--max-memory", "256K"])
    assert rc == 0, capsys.readouterr().err
    expected = expand(golden, "q4_k_m+imatrix", imatrix_file)
    assert diff_digests(expected, ours(tmp_path / "x.gguf", golden["sha_hex_digits"])) == []


def test_dry_run_shows_types_sizes_and_bits_per_weight(fresh_hub, capsys):
    golden = GOLDENS["tiny-llama-k"]
    rc = cli.main(["convert", golden["repo"], "--outtype", "q4_k_m", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    case = golden["cases"]["q4_k_m"]
    for (name, _), qtype in zip(golden["tensors"], case["types"]):
        line = next(ln for ln in lines if ln.split()[:1] == [name])
        assert f" {qtype} " in line and line.endswith("bpw")
    data = sum(mixes_nbytes(t, s) for (_, s), t in zip(golden["tensors"], case["types"]))
    assert f"{len(golden['tensors'])} tensors, {data:,d} bytes of tensor data (" in out


# --------------------------------------------------------------------------- slow

pytest_slow = pytest.mark.slow
ALL_OK = cases(errors_only=False)


@pytest_slow
@pytest.mark.parametrize("model, cid", ALL_OK, ids=[f"{m}:{c}" for m, c in ALL_OK])
def test_every_case_is_byte_identical_and_decodes(model, cid, fresh_hub, tmp_path, capsys, monkeypatch):
    """Every case byte for byte; then llama.cpp loads our file and greedy-decodes what it decoded from
    llama-quantize's (when the goldens were made with llama-cpp-python).

    IQ1_M: libggml-python 0.20.2 (the newest on PyPI) predates ggml 0.25's rewritten IQ1_M split
    search, which picks another split in about 1 sub-block in 4000. With llama-cpp-python installed its
    ggml (the goldens' own) is what hfstream picks by itself (made sure of here) and these cases must
    match exactly; otherwise an IQ1_M-data-only difference is an expected failure.
    """
    golden = GOLDENS[model]
    strict = True
    if "IQ1_M" in golden["cases"][cid]["types"] and quant.ggml_version() != REFERENCE_GGML:
        lib = _reference_ggml_library()
        if lib is not None:
            monkeypatch.setenv("HFSTREAM_GGML_LIB", lib)
            monkeypatch.setattr(ggml, "_LIB", None)
            monkeypatch.setattr(ggml, "_TRIED", False)
        else:
            strict = False
    path = check_case(model, cid, tmp_path, capsys, monkeypatch, allow_old_iq1_m=not strict)
    if "embeddings" in golden["cases"][cid] and LLAMA_CPP:  # an encoder: no LM head to decode with
        assert llamacpp.embeddings(path, golden["embedding_texts"]) == golden["cases"][cid]["embeddings"]
        return
    expected = golden["cases"][cid].get("greedy")
    if expected is None or not LLAMA_CPP:
        pytest.skip("greedy tokens need llama-cpp-python (make test-slow installs it)")
    assert llamacpp.greedy_tokens(path, golden["greedy_prompt"], len(expected)) == expected
