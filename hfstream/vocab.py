"""Tokenizer files (in memory) -> the GGUF tokenizer metadata llama.cpp's converter writes.

One public function, :func:`add_vocab`. It reads only the bytes it is given (nothing touches the
disk) and adds the ``tokenizer.*`` keys to a ``gguf.GGUFWriter`` in the order, with the value types
and the values, that ``convert_hf_to_gguf.py`` (llama.cpp, as vendored in llama-cpp-python 0.3.36)
writes for the same repo, so the whole output file can be byte-identical.

Three vocab kinds ("strategies"), tried in the order an architecture asks for:

``spm``       ``tokenizer.model`` (SentencePiece), plus ``added_tokens.json`` and the
              ``added_tokens_decoder`` of ``tokenizer_config.json``; model ``llama``, pre ``default``.
``llama_hf``  a ``tokenizer.json`` holding a SentencePiece-style BPE (``byte_fallback`` and a
              ``Sequence`` decoder) without ``tokenizer.model``; model ``llama``, pre ``default``.
``bpe``       a GPT-2 style byte-level BPE ``tokenizer.json``; model ``gpt2``; the pre-tokenizer is
              named by hashing the ids of a check text (table in ``data/bpe_pre.json``).

A kind that does not fit the files (no ``tokenizer.model``, a ``tokenizer.json`` of another shape)
passes to the next one, as the reference's ``FileNotFoundError``/``TypeError`` fall-through does.
After the vocab, the "special vocab" (merges, special token ids, add_bos/eos/sep flags, chat
template, normalizer flags) is derived from ``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``/``.json`` and ``config.json`` exactly as gguf-py's ``SpecialVocab`` does.

The reference builds BPE vocabs through transformers' ``AutoTokenizer``; we use the ``tokenizers``
package directly and reproduce what ``AutoTokenizer`` (transformers 5.x) adds on load: named and
extra special tokens missing from ``tokenizer.json`` are added as special tokens, and when
``tokenizer_config.json`` sets ``add_bos_token``/``add_eos_token`` (or there is no post-processor)
the post-processor becomes a template adding BOS/EOS accordingly; added tokens that are not
``normalized`` are replaced by decode(encode(token)), as the reference does. Known gaps (the
reference's output there depends on the transformers version it runs with):

- a model-specific ``tokenizer_class`` (``GPT2Tokenizer``, ``Qwen2Tokenizer``, ...) makes
  transformers 5 rebuild the pipeline from vocab + merges with that class's own pre-tokenizer,
  defaults for unset special tokens, and only the added tokens listed in ``tokenizer_config.json``;
  we use ``tokenizer.json`` as written. The two agree whenever tokenizer.json matches its class and
  both files list the same added tokens (what ``save_pretrained`` writes).
- tokenizers with custom Python code (``trust_remote_code``) and slow-only tokenizers
  (``vocab.json`` + ``merges.txt`` without ``tokenizer.json``) are not supported.
- the reference lists several ``additional_chat_templates/*.jinja`` in directory order; we sort.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from hashlib import sha256
from importlib import resources
from string import ascii_letters, digits
from typing import Any

import gguf

from . import jsonfile
from .errors import ConfigMismatchError, InvalidChatTemplateError, InvalidConfigError, UnsupportedTokenizerError
from .settings import MAX_SMALL_FILE_BYTES

__all__ = ["add_vocab", "add_special_vocab", "add_fixed_special_ids", "add_xlm_roberta_vocab", "base_vocab",
           "llama_hf_tokens", "tokenizer_config", "SpecialTokens", "load_chat_template", "with_chat_template"]

LLAMA_STRATEGIES = ("spm", "llama_hf", "bpe")
_STRATEGIES = frozenset(LLAMA_STRATEGIES)

# GGUF keys (gguf.Keys.Tokenizer in the reference's gguf-py; spelled out because the gguf on PyPI
# may lag behind it, e.g. the normalizer keys).
_K = "tokenizer.ggml."
_ID_KEYS = {  # special token types the reference's GGUFWriter has an ``add_{typ}_token_id`` for
    "bos": _K + "bos_token_id",
    "eos": _K + "eos_token_id",
    "unk": _K + "unknown_token_id",
    "sep": _K + "seperator_token_id",
    "pad": _K + "padding_token_id",
    "mask": _K + "mask_token_id",
    "eot": _K + "eot_token_id",
    "eom": _K + "eom_token_id",
}
_ADD_KEYS = {"bos": _K + "add_bos_token", "eos": _K + "add_eos_token", "sep": _K + "add_sep_token"}
_KEY_ADD_SPACE_PREFIX = _K + "add_space_prefix"
_KEY_LOWERCASE = _K + "normalizer.lowercase"
_KEY_STRIP_ACCENTS = _K + "normalizer.strip_accents"
_KEY_CHAT_TEMPLATE = "tokenizer.chat_template"
_KEY_CHAT_TEMPLATES = "tokenizer.chat_templates"

_DEFAULT_SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (
    int(gguf.TokenType.NORMAL), int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL),
    int(gguf.TokenType.USER_DEFINED), int(gguf.TokenType.UNUSED), int(gguf.TokenType.BYTE),
)
_SPM_SPACE = "\u2581"  # SentencePiece's visible space


class _NotThisKind(Exception):
    """The files do not hold this vocab kind; the next strategy is tried."""


# --- public ------------------------------------------------------------------------------------


def add_vocab(
    writer: gguf.GGUFWriter,
    files: Mapping[str, bytes],
    hparams: dict,
    *,
    strategies: Sequence[str] = LLAMA_STRATEGIES,
    bpe_pre: str | None = None,
    llama_quirks: bool | None = None,
    special: Callable[[gguf.GGUFWriter, SpecialTokens], None] | None = None,
) -> None:
    """Add the tokenizer keys for the repo whose small files are ``files`` to ``writer``.

    Args:
        writer: the GGUF writer; keys are appended to its metadata in the reference's order.
        files: repo-relative file name -> bytes (``tokenizer.json``, ``tokenizer_config.json``,
            ``tokenizer.model``, ``special_tokens_map.json``, ``added_tokens.json``, ``config.json``,
            ``chat_template.jinja``, ``chat_template.json``, ...); absent files are simply missing.
        hparams: config.json, parsed (``vocab_size`` pads or bounds the vocab).
        strategies: vocab kinds to try, in order: ``"spm"``, ``"llama_hf"``, ``"bpe"``.
        bpe_pre: force ``tokenizer.ggml.pre`` for a BPE vocab instead of recognising it by hash.
        llama_quirks: also do what the reference's ``LlamaModel.set_vocab`` adds around the vocab
            (``add_space_prefix`` from ``tokenizer_config.json`` first; the CodeLlama infill ids for
            vocab_size 32016; ``add_bos_token`` false for vocab_size 49152). Default: on exactly when
            ``strategies`` is the Llama order ``("spm", "llama_hf", "bpe")``.
        special: for a family that does something between the token list and the special vocab
            (``spm`` and ``bpe``): called there with the writer and the special token ids about to
            be written, which it may change (GLM-4's EOT from its added tokens, InternLM3's EOS).

    Raises:
        UnsupportedTokenizerError: no strategy fits the files, an unrecognised BPE pre-tokenizer
            (the message names the hash and ``--bpe-pre``), or a tokenizer file that cannot be read
            (not JSON, or not an object: see ``jsonfile``).
        InvalidConfigError: config.json is malformed, or a tokenizer file has a bad value.
        ConfigMismatchError: ``vocab_size`` is smaller than the tokenizer.
    """
    unknown = [s for s in strategies if s not in _STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown vocab strategies {unknown!r}; expected some of {sorted(_STRATEGIES)}")
    if llama_quirks is None:
        llama_quirks = tuple(strategies) == LLAMA_STRATEGIES
    repo = _Repo(files, hparams)
    tok_config = repo.json("tokenizer_config.json")

    if llama_quirks:
        if "tekken.json" in files and "tokenizer.json" not in files:
            raise UnsupportedTokenizerError("Mistral-format tokenizer (tekken.json) is not supported")
        if isinstance(tok_config, dict):
            if (add_prefix_space := tok_config.get("add_prefix_space")) is not None:
                writer.add_bool(_KEY_ADD_SPACE_PREFIX, add_prefix_space)
            if tok_config.get("tokenizer_class") == "HybridDNATokenizer":
                raise UnsupportedTokenizerError("HybridDNATokenizer vocabularies are not supported")

    for strategy in strategies:
        try:
            if strategy == "spm":
                _add_spm(writer, repo, hparams, special)
            elif strategy == "llama_hf":
                _add_llama_hf(writer, repo)
            else:
                _add_bpe(writer, repo, hparams, bpe_pre, special)
            break
        except _NotThisKind:
            continue
    else:
        wanted = {"spm": "tokenizer.model", "llama_hf": "tokenizer.json", "bpe": "tokenizer.json"}
        names = " or ".join(dict.fromkeys(wanted[s] for s in strategies))
        raise UnsupportedTokenizerError(f"no usable tokenizer in the repo: expected {names}")

    if llama_quirks:
        vocab_size = hparams.get("vocab_size", 32000)
        if vocab_size == 32016:  # CodeLlama: the infill tokens
            infill = _SpecialVocab(repo, special_types=("prefix", "suffix", "middle", "eot"))
            for typ, tid in (("prefix", 32007), ("suffix", 32008), ("middle", 32009), ("eot", 32010)):
                infill.set_special_token(typ, tid)
            infill.write(writer)
        if vocab_size == 49152:  # small granite models
            writer.add_bool(_ADD_KEYS["bos"], False)


def base_vocab(files: Mapping[str, bytes], hparams: dict, *, bpe_pre: str | None = None
               ) -> tuple[list[str], list[int], str]:
    """The tokens, token types and ``tokenizer.ggml.pre`` name of the repo's ``tokenizer.json``, as
    the BPE vocab has them before it is written (the reference's ``get_vocab_base``): for families
    that write them under a tokenizer model of their own (BERT's WordPiece as ``bert``). The
    pre-tokenizer is named by the check-text hash, as for BPE, unless ``bpe_pre`` is given.

    Raises UnsupportedTokenizerError without ``tokenizer.json`` or for an unrecognised hash.
    """
    try:
        tokens, types, pre, _ = _base_vocab(_Repo(files, hparams), hparams, bpe_pre)
        return tokens, types, pre
    except _NotThisKind:
        raise UnsupportedTokenizerError("no usable tokenizer in the repo: expected tokenizer.json") from None


def add_special_vocab(writer: gguf.GGUFWriter, files: Mapping[str, bytes], hparams: dict, *,
                      n_vocab: int | None = None, load_merges: bool = False) -> None:
    """Add only the "special vocab" keys (merges, special token ids, add-special flags, chat template,
    normalizer flags), as gguf-py's ``SpecialVocab(dir, load_merges, n_vocab=n_vocab)`` does; for
    families that build the token list themselves. Special ids at or past ``n_vocab`` are skipped.
    """
    _SpecialVocab(_Repo(files, hparams), load_merges=load_merges, n_vocab=n_vocab).write(writer)


def llama_hf_tokens(files: Mapping[str, bytes], hparams: dict) -> tuple[list[bytes], list[float], list[int]]:
    """The tokens, scores and token types of an SPM-style BPE ``tokenizer.json`` (gguf-py's
    ``LlamaHfVocab``), for families that write them under a tokenizer model of their own (Gemma 4).
    Raises UnsupportedTokenizerError when ``tokenizer.json`` is missing or of another kind."""
    try:
        return _llama_hf_tokens(_Repo(files, hparams))
    except _NotThisKind:
        raise UnsupportedTokenizerError(
            "expected a tokenizer.json holding a BPE model with byte fallback and a Sequence decoder") from None


def add_fixed_special_ids(writer: gguf.GGUFWriter, files: Mapping[str, bytes], hparams: dict,
                          ids: Mapping[str, int]) -> None:
    """A second special vocab over only the token types of ``ids`` (e.g. CodeGemma's ``prefix``,
    ``eot``), each set to its id there unless the tokenizer files or config.json name one, without
    a chat template: gguf-py's ``SpecialVocab(dir, special_token_types=ids)`` plus
    ``_set_special_token`` per type. Types with no GGUF key are skipped, as the reference does.

    The add-special flags and normalizer flags it derives again are those already written (the
    reference writes them a second time, in place); they are not written twice here.
    """
    sv = _SpecialVocab(_Repo(files, hparams), special_types=tuple(ids))
    for typ, tid in ids.items():
        sv.set_special_token(typ, tid)
    sv.chat_template = None
    have = writer.kv_data[0]

    def written(key: str | None, value: Any) -> bool:
        return key is not None and key in have and have[key].value == value

    sv.special_ids = {t: i for t, i in sv.special_ids.items() if not written(_ID_KEYS.get(t), i)}
    sv.add_special = {t: v for t, v in sv.add_special.items() if not written(_ADD_KEYS.get(t), v)}
    if written(_KEY_LOWERCASE, sv.lowercase):
        sv.lowercase = None
    if written(_KEY_STRIP_ACCENTS, sv.strip_accents):
        sv.strip_accents = None
    sv.write(writer)


def tokenizer_config(files: Mapping[str, bytes]) -> dict:
    """``tokenizer_config.json`` parsed, for families that read a flag of it themselves (an empty dict
    when the repo has none or it is not an object); a file that is not JSON fails as ``jsonfile`` says."""
    return _dict_or_empty(_Repo(files, {}).json("tokenizer_config.json"))


def load_chat_template(path: str | os.PathLike) -> str:
    """The text of a ``--chat-template`` file (a Jinja template, as chat_template.jinja holds one);
    InvalidChatTemplateError when it cannot be read, is empty, too large or not UTF-8."""
    given = os.fspath(path)
    try:
        with open(given, "rb") as f:
            data = f.read(MAX_SMALL_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidChatTemplateError(f"cannot read the chat template {given}: {e.strerror or e}") from None
    if len(data) > MAX_SMALL_FILE_BYTES:
        raise InvalidChatTemplateError(f"the chat template {given} is larger than {MAX_SMALL_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidChatTemplateError(f"the chat template {given} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise InvalidChatTemplateError(f"the chat template {given} is empty")
    return text


def with_chat_template(files: Mapping[str, bytes], template: str) -> dict[str, bytes]:
    """``files`` as if the repo's chat template were ``template`` (``--chat-template``): every place
    gguf-py's SpecialVocab looks for one (tokenizer_config.json's key, chat_template.jinja / .json,
    additional_chat_templates/) gives way to a chat_template.jinja of that text, so it is written
    where and how the repo's own template would be, by the text model's vocabulary and by a family
    that places the template itself (DeepSeek-V4)."""
    out = {name: blob for name, blob in files.items()
           if name != "chat_template.json" and not name.startswith("additional_chat_templates/")}
    out["chat_template.jinja"] = template.encode("utf-8")
    if "tokenizer_config.json" in out:
        config = jsonfile.load(out["tokenizer_config.json"], "tokenizer_config.json")
        if isinstance(config, dict) and "chat_template" in config:
            del config["chat_template"]
            out["tokenizer_config.json"] = json.dumps(config, ensure_ascii=False).encode("utf-8")
    return out


class SpecialTokens:
    """The special token ids a vocab is about to write (type -> id, in writing order), for a family
    that changes them around gguf-py's ``SpecialVocab`` as the reference does.

    ``added``: the tokenizer's added tokens, content -> id, as transformers' ``get_added_vocab``
    lists them (a BPE ``tokenizer.json``; empty for a SentencePiece vocab).
    """

    def __init__(self, special: _SpecialVocab, added: Mapping[str, int]):
        self._special = special
        self.added = added

    @property
    def ids(self) -> Mapping[str, int]:
        return dict(self._special.special_ids)

    def set_default(self, typ: str, tid: int) -> None:
        """``typ`` takes ``tid`` unless the files named one (gguf-py's ``_set_special_token``)."""
        self._special.set_special_token(typ, tid)

    def replace(self, typ: str, tid: int) -> None:
        """``typ``, already set, takes ``tid`` instead, keeping its place in the writing order."""
        if typ not in self._special.special_ids:
            raise KeyError(typ)
        self._special.special_ids[typ] = tid


# --- reading the repo's small files ------------------------------------------------------------


class _Repo:
    """The small files, decoded once and on demand."""

    def __init__(self, files: Mapping[str, bytes], hparams: dict):
        self.files = files
        self.hparams = hparams
        self._json: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def text(self, name: str) -> str | None:
        """The file decoded (each file is read as text or as JSON, once)."""
        data = self.files.get(name)
        try:
            return (None if data is None else bytes(data).decode("utf-8")
                    if isinstance(data, (bytes, bytearray, memoryview)) else str(data))
        except UnicodeDecodeError as e:
            raise InvalidConfigError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def raw(self, name: str) -> bytes | None:
        """The file's bytes (UTF-8 checked by ``json`` or ``text`` first), None when the repo lacks it."""
        data = self.files.get(name)
        return data.encode("utf-8") if isinstance(data, str) else None if data is None else bytes(data)

    def json(self, name: str, expect: type | None = None) -> Any:
        """The file parsed (None when the repo lacks it); its failures are its kind's (``jsonfile``)."""
        if name not in self._json:
            data = self.files.get(name)
            self._json[name] = None if data is None else jsonfile.load(data, name)
        value = self._json[name]
        if value is not None and expect is not None:
            jsonfile.check_type(value, name, expect)
        return value

    def slim_tokenizer_json(self) -> None:
        """Drop the vocabulary map from the cached tokenizer.json parse and join its merges.

        A BPE vocab is read through ``tokenizers`` (its own copy of the vocabulary); what is still
        read from the parse afterwards is small (normalizer, added tokens, post-processor) except
        the merges, kept as joined strings, a fraction of the size of the parsed pairs. One parse,
        and the parsed vocabulary and the ``tokenizers`` object never live at once.
        """
        tj = self._json.get("tokenizer.json")
        if not isinstance(tj, dict):
            return
        model = tj.get("model")
        if not isinstance(model, dict):
            return
        slim = {k: v for k, v in model.items() if k != "vocab"}
        joined = _joined_merges(slim.get("merges"))
        if joined is not None:
            slim["merges"] = joined
        tj["model"] = slim

    def tokenizer_json(self) -> dict | None:
        return self.json("tokenizer.json", dict)


def _joined_merges(merges: Any) -> list[str] | None:
    """``model.merges`` as "a b" strings, from either spelling; None when it is neither."""
    if not isinstance(merges, list) or not merges:
        return None
    if isinstance(merges[0], str):
        return merges
    if isinstance(merges[0], list) and len(merges[0]) == 2 and isinstance(merges[0][0], str):
        # pairs (transformers >= 4.45): a space inside a part is written as U+0120, like byte-level BPE
        plain = all(type(p) is list and len(p) == 2 and type(p[0]) is str and type(p[1]) is str for p in merges)
        if plain and not any(" " in a or " " in b for a, b in merges):
            return [f"{a} {b}" for a, b in merges]  # the common case, without a join per pair
        return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]
    return None


def _dict_or_empty(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


# --- spm: tokenizer.model ----------------------------------------------------------------------


def _does_token_look_special(text: str) -> bool:
    """Added tokens some repos forget to mark special (the reference's list, as facts)."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _add_spm(writer: gguf.GGUFWriter, repo: _Repo, hparams: dict,
             special: Callable[[gguf.GGUFWriter, SpecialTokens], None] | None = None) -> None:
    model = repo.files.get("tokenizer.model")
    if model is None:
        raise _NotThisKind
    from sentencepiece import SentencePieceProcessor

    try:
        sp = SentencePieceProcessor(model_proto=bytes(model))
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
        raise UnsupportedTokenizerError(f"tokenizer.model: not a valid SentencePiece model ({e})") from None

    n_sp = sp.vocab_size()
    key = next((k for k in ("vocab_size_per_layer_input", "vocab_size") if k in hparams), None)
    vocab_size = (hparams[key] if key else None) or n_sp
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise InvalidConfigError(f"config.json: vocab_size must be a positive integer, not {vocab_size!r}")
    if vocab_size < n_sp:  # the reference cuts the vocab with a warning; ids past it would have no row
        raise ConfigMismatchError(
            f"config.json: {key} {vocab_size} is smaller than the tokenizer (tokenizer.model has {n_sp} pieces)")

    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(min(n_sp, vocab_size)):
        if sp.IsUnknown(i):
            kind = UNKNOWN
        elif sp.IsControl(i):
            kind = CONTROL
        elif sp.IsUnused(i):
            kind = UNUSED
        elif sp.IsByte(i):
            kind = BYTE
        else:
            kind = NORMAL
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = kind

    added = repo.json("added_tokens.json", dict)
    if added is not None:
        for text, tid in added.items():
            if not isinstance(tid, int):
                raise InvalidConfigError(f"added_tokens.json: id of {text!r} is not an integer")
            if tid >= vocab_size:
                continue
            tokens[tid], scores[tid], types[tid] = text.encode("utf-8"), -1000.0, USER_DEFINED

    decoder = _dict_or_empty(repo.json("tokenizer_config.json")).get("added_tokens_decoder", {})
    for key_id, data in _dict_or_empty(decoder).items():
        try:
            tid, text = int(key_id), data["content"]
        except (ValueError, TypeError, KeyError):
            raise InvalidConfigError(f"tokenizer_config.json: bad added_tokens_decoder entry {key_id!r}") from None
        if tid >= vocab_size:
            continue
        if data.get("special") or _does_token_look_special(text):
            types[tid] = CONTROL
        else:
            text = text.replace(_SPM_SPACE, " ")
            types[tid] = USER_DEFINED
        scores[tid] = -1000.0
        tokens[tid] = text.encode("utf-8")

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    sv = _SpecialVocab(repo, n_vocab=len(tokens))
    if special is not None:
        special(writer, SpecialTokens(sv, {}))
    sv.write(writer)


# --- XLM-RoBERTa: a SentencePiece unigram model with fairseq's ids ------------------------------

#: the ids transformers (and the reference) give XLM-RoBERTa's first tokens, ahead of the model's pieces
_FAIRSEQ_FIRST = ((b"<s>", CONTROL), (b"<pad>", CONTROL), (b"</s>", CONTROL), (b"<unk>", UNKNOWN))
_SPM_UNIGRAM = 1  # TrainerSpec.model_type


def add_xlm_roberta_vocab(writer: gguf.GGUFWriter, files: Mapping[str, bytes], hparams: dict) -> None:
    """XLM-RoBERTa's vocabulary from ``sentencepiece.bpe.model`` (a unigram model despite its name), as
    the reference writes it (model ``t5``, llama.cpp's UGM tokenizer): the pieces realigned to
    fairseq's ids (``<s> <pad> </s> <unk>``, then piece i at i + 1; the last id stays a placeholder),
    the normalizer's dummy prefix, whitespace rule and precompiled charsmap, the token-type count,
    then the special vocab.

    Raises UnsupportedTokenizerError without ``sentencepiece.bpe.model`` (a repo with only
    tokenizer.json is not converted yet) or for a SentencePiece model that is not unigram.
    """
    from sentencepiece import SentencePieceProcessor

    name = "sentencepiece.bpe.model"
    model = files.get(name)
    if model is None:
        raise UnsupportedTokenizerError(f"XLM-RoBERTa without {name} (tokenizer.json only) is not supported yet")
    model_type, add_prefix, remove_whitespaces, charsmap = _spm_model_spec(bytes(model), name)
    if model_type != _SPM_UNIGRAM:
        raise UnsupportedTokenizerError(f"{name}: a SentencePiece model of type {model_type}, not unigram")
    try:
        sp = SentencePieceProcessor(model_proto=bytes(model))
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
        raise UnsupportedTokenizerError(f"{name}: not a valid SentencePiece model ({e})") from None
    n_sp = sp.vocab_size()
    vocab_size = hparams.get("vocab_size", 0)
    if not isinstance(vocab_size, int) or vocab_size < 0:
        raise InvalidConfigError(f"config.json: vocab_size must be a positive integer, not {vocab_size!r}")
    vocab_size = max(vocab_size, n_sp)

    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    # fairseq's first four ids, then the model's pieces from 3 on shifted by one; the last one drops out
    tokens = [t for t, _ in _FAIRSEQ_FIRST] + tokens[3:-1]
    scores = [0.0] * len(_FAIRSEQ_FIRST) + scores[3:-1]
    types = [k for _, k in _FAIRSEQ_FIRST] + types[3:-1]

    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(add_prefix)
    writer.add_token_type_count(hparams.get("type_vocab_size", 1))
    writer.add_remove_extra_whitespaces(remove_whitespaces)
    if charsmap:
        writer.add_precompiled_charsmap(charsmap)
    _SpecialVocab(_Repo(files, hparams), n_vocab=len(tokens)).write(writer)


def _spm_model_spec(model: bytes, name: str) -> tuple[int, bool, bool, bytes]:
    """(trainer_spec.model_type, normalizer_spec.add_dummy_prefix, .remove_extra_whitespaces,
    .precompiled_charsmap) of a SentencePiece ``ModelProto`` (its own protobuf schema, shipped with
    sentencepiece), with the proto's defaults where a field is absent."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    try:
        proto.ParseFromString(model)
    except DecodeError:
        raise UnsupportedTokenizerError(f"{name}: not a valid SentencePiece model (malformed protobuf)") from None
    norm = proto.normalizer_spec
    return (proto.trainer_spec.model_type, norm.add_dummy_prefix, norm.remove_extra_whitespaces,
            bytes(norm.precompiled_charsmap))


# --- the transformers view of a tokenizer.json ---------------------------------------------------


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class _FastTokenizer:
    """A ``tokenizers.Tokenizer`` set up the way ``AutoTokenizer.from_pretrained`` leaves it."""

    def __init__(self, repo: _Repo, data: bytes | None = None):
        """``data``: the tokenizer.json to load instead of the repo's (see ``_with_needed_merges``)."""
        from tokenizers import AddedToken, Tokenizer, processors

        if data is None:
            data = repo.raw("tokenizer.json")  # parsed (so checked) by the caller already
        if data is None:
            raise UnsupportedTokenizerError("no tokenizer.json in the repo")
        try:
            self.tok = Tokenizer.from_buffer(data)
        except Exception as e:  # tokenizers raises a plain Exception on a bad file
            raise UnsupportedTokenizerError(f"tokenizer.json: cannot be loaded by tokenizers ({e})") from None
        config = _dict_or_empty(repo.json("tokenizer_config.json"))
        specials_map = _dict_or_empty(repo.json("special_tokens_map.json"))

        # named special tokens: tokenizer_config.json first, special_tokens_map.json for the rest;
        # transformers 5 also takes any other ``*_token`` key of the config that names a token, and
        # the entries of an ``extra_special_tokens`` object, as named ("model-specific") specials
        self.named: dict[str, str] = {}
        for attr in _NAMED_SPECIALS:
            content = _token_content(config.get(attr, specials_map.get(attr)))
            if content is not None:
                self.named[attr] = content
        for attr, value in config.items():
            if attr.endswith("_token") and attr not in _NAMED_SPECIALS and isinstance(value, str):
                self.named[attr] = value
        extra = config.get("extra_special_tokens", config.get("additional_special_tokens"))
        if extra is None:
            extra = specials_map.get("additional_special_tokens", [])
        if isinstance(extra, dict):
            self.named.update((k, c) for k, c in ((k, _token_content(v)) for k, v in extra.items()) if c)
        self.extra = [c for c in (_token_content(t) for t in (extra if isinstance(extra, list) else [])) if c]

        # added tokens the config knows but tokenizer.json lacks, then missing special tokens
        have = {t.content for t in self.tok.get_added_tokens_decoder().values()}
        to_add = []
        decoder = _dict_or_empty(config.get("added_tokens_decoder"))
        for _, entry in sorted(((int(k), v) for k, v in decoder.items() if str(k).isdigit()), key=lambda x: x[0]):
            content = _token_content(entry)
            if content is not None and content not in have:
                entry = _dict_or_empty(entry)
                to_add.append(AddedToken(
                    content, special=bool(entry.get("special", False)),
                    normalized=bool(entry.get("normalized", not entry.get("special", False))),
                    lstrip=bool(entry.get("lstrip", False)), rstrip=bool(entry.get("rstrip", False)),
                    single_word=bool(entry.get("single_word", False)),
                ))
                have.add(content)
        for content in [*self.named.values(), *self.extra]:
            if content not in have:
                to_add.append(AddedToken(content, special=True, normalized=False))
                have.add(content)
        if to_add:
            self.tok.add_tokens(to_add)

        # transformers rebuilds the post-processor when the config states add_bos/eos_token
        if "add_bos_token" in config or "add_eos_token" in config or self.tok.post_processor is None:
            bos = self.named.get("bos_token") if config.get("add_bos_token") else None
            eos = self.named.get("eos_token") if config.get("add_eos_token") else None
            single = f"{bos + ':0 ' if bos is not None else ''}$A:0{' ' + eos + ':0' if eos is not None else ''}"
            pair = (f"{single}{' ' + bos + ':1' if bos is not None else ''} "
                    f"$B:1{' ' + eos + ':1' if eos is not None else ''}")
            special_tokens = [(t, self.tok.token_to_id(t)) for t in (bos, eos) if t is not None]
            try:
                self.tok.post_processor = processors.TemplateProcessing(
                    single=single, pair=pair, special_tokens=special_tokens)
            except Exception as e:
                raise UnsupportedTokenizerError(f"tokenizer.json: cannot add BOS/EOS as configured ({e})") from None

    def vocab(self) -> dict[str, int]:
        return self.tok.get_vocab(with_added_tokens=True)

    def added_tokens(self) -> dict[int, Any]:
        return self.tok.get_added_tokens_decoder()

    def added_vocab(self) -> dict[str, int]:
        return {t.content: i for i, t in sorted(self.added_tokens().items(), key=lambda x: x[0])}

    def roundtrip(self, text: str) -> str:
        """decode(encode(text)) without special tokens added, as the reference normalises added tokens."""
        return self.tok.decode(self.tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)

    def pre_hash(self, chktxt: str) -> str:
        ids = self.tok.encode(chktxt).ids  # with the post-processor's special tokens, like AutoTokenizer
        return sha256(str(ids).encode()).hexdigest()


def _with_needed_merges(data: bytes, tj: dict, texts: Sequence[str]) -> bytes | None:
    """tokenizer.json (``data``, parsed: ``tj``) with only the merges that can act on ``texts``, or None.

    A big BPE vocabulary has ~300k merges, and building them is most of ``Tokenizer.from_str``
    (0.4 of its 0.5 s on a 128k-token Llama 3 tokenizer, and much of its memory). What is read from
    the tokenizer here needs few of them: the vocabulary and added tokens keep every id (the model's
    vocab is kept whole), decoding an added token never merges, and the only text encoded is the
    pre-tokenizer check text. A merge can only fire in a word that contains its result, so the
    merges whose result is a substring of one of those words (as this tokenizer's own normalizer and
    pre-tokenizer cut them) give the same encoding. Added tokens' contents count as texts too.
    None (load the file as it is) when the tokenizer is not a BPE one of a known shape.
    """
    from tokenizers import Tokenizer

    model = tj.get("model")
    merges = model.get("merges") if isinstance(model, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(merges, list) or not merges:
        return None
    added = [t["content"] for t in tj.get("added_tokens") or [] if isinstance(t, dict) and isinstance(t.get("content"), str)]
    try:
        # the same normalizer and pre-tokenizer around an empty model, to cut the texts into words
        cutter = Tokenizer.from_str(json.dumps({**tj, "model": {**model, "vocab": {}, "merges": []},
                                                "added_tokens": []}))
        words: list[str] = []
        for sample in [*texts, *added]:
            if cutter.normalizer is not None:
                sample = cutter.normalizer.normalize_str(sample)
            pieces = (cutter.pre_tokenizer.pre_tokenize_str(sample) if cutter.pre_tokenizer is not None
                      else [(sample, None)])
            words.extend(w for w, _ in pieces)
    except Exception:  # a shape this cannot mimic: load the whole file
        return None
    if any(len(w) > 256 for w in words):
        return None
    parts = {w[i:j] for w in words for i in range(len(w)) for j in range(i + 1, len(w) + 1)}
    if all(type(m) is list and len(m) == 2 and type(m[0]) is str and type(m[1]) is str for m in merges):
        kept = [m for m in merges if m[0] in parts and m[1] in parts and m[0] + m[1] in parts]
    elif all(type(m) is str for m in merges):
        kept = [m for m in merges if m.replace(" ", "", 1) in parts]
    else:
        return None
    return _replace_merges(data, kept) or json.dumps({**tj, "model": {**model, "merges": kept}},
                                                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _replace_merges(data: bytes, merges: list) -> bytes | None:
    """``data`` with its merges array replaced, when it has the layout ``tokenizers`` saves (``model``
    the last key, ``merges`` the last in it): a splice instead of serializing the vocabulary again."""
    import re

    found = list(re.finditer(rb'"merges"\s*:\s*\[', data))
    if len(found) != 1:
        return None
    start = found[0]
    end = data.rfind(b"]")
    if end < start.end() or re.fullmatch(rb"\s*\}\s*\}\s*", data[end + 1:]) is None:
        return None
    return b"".join((data[:start.end() - 1], json.dumps(merges, ensure_ascii=False).encode("utf-8"), data[end + 1:]))


# --- llama_hf: an SPM-style BPE tokenizer.json -------------------------------------------------


def _add_llama_hf(writer: gguf.GGUFWriter, repo: _Repo) -> None:
    tokens, scores, types = _llama_hf_tokens(repo)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    _SpecialVocab(repo, n_vocab=len(tokens)).write(writer)


def _llama_hf_tokens(repo: _Repo) -> tuple[list[bytes], list[float], list[int]]:
    tj = repo.tokenizer_json()
    if tj is None:
        raise _NotThisKind
    model = tj.get("model")
    decoder = tj.get("decoder")
    if not isinstance(model, dict) or not isinstance(decoder, dict):
        raise _NotThisKind
    is_llama3 = model.get("type") == "BPE" and model.get("ignore_merges", False) and not model.get("byte_fallback", True)
    if is_llama3 or model.get("type") != "BPE" or not model.get("byte_fallback", False) or decoder.get("type") != "Sequence":
        raise _NotThisKind

    fast = _FastTokenizer(repo)
    base_size = fast.tok.get_vocab_size(with_added_tokens=False)
    vocab = fast.vocab()
    added = [(text, tid) for text, tid in sorted(fast.added_vocab().items(), key=lambda x: x[1]) if tid >= base_size]
    specials = {t: vocab[t] for t in dict.fromkeys([*fast.named.values(), *fast.extra]) if t in vocab}
    special_ids = set(specials.values())
    reverse = {tid: text for text, tid in vocab.items()}

    tokens: list[bytes] = []
    types: list[int] = []
    for tid in range(base_size):
        if tid not in reverse:
            raise UnsupportedTokenizerError(f"tokenizer.json: no token has id {tid} (the vocab has holes)")
        piece = reverse[tid].encode("utf-8")
        tokens.append(piece)
        types.append(BYTE if re.fullmatch(rb"<0x[0-9A-Fa-f]{2}>", piece)
                     else CONTROL if tid in special_ids else NORMAL)
    for text, _ in added:
        tokens.append(text.encode("utf-8"))
        types.append(CONTROL if text in specials else USER_DEFINED)
    return tokens, [-1000.0] * len(tokens), types


# --- bpe: GPT-2 style byte-level BPE -------------------------------------------------------------


def _bpe_pre_table() -> dict:
    return json.loads(resources.files("hfstream").joinpath("data/bpe_pre.json").read_text(encoding="utf-8"))


def _add_bpe(writer: gguf.GGUFWriter, repo: _Repo, hparams: dict, bpe_pre: str | None,
             special: Callable[[gguf.GGUFWriter, SpecialTokens], None] | None = None) -> None:
    tokens, types, bpe_pre, added = _base_vocab(repo, hparams, bpe_pre)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(bpe_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    del tokens, types
    sv = _SpecialVocab(repo, load_merges=True)
    if special is not None:
        special(writer, SpecialTokens(sv, added))
    sv.write(writer)


def _base_vocab(repo: _Repo, hparams: dict, bpe_pre: str | None
                ) -> tuple[list[str], list[int], str, dict[str, int]]:
    """The tokens, token types and pre-tokenizer name of a ``tokenizer.json`` as transformers loads it
    (the reference's ``get_vocab_base``, which GPT-2 style BPE and WordPiece (BERT) vocabs share), and
    its added tokens (content -> id), which some families' special tokens are looked up in."""
    tj = repo.tokenizer_json()
    if tj is None:
        raise _NotThisKind
    table = _bpe_pre_table() if bpe_pre is None else None
    raw = repo.raw("tokenizer.json")
    assert raw is not None  # tokenizer_json() parsed it
    lighter = _with_needed_merges(raw, tj, [table["chktxt"]] if table else [])
    del tj
    repo.slim_tokenizer_json()
    fast = _FastTokenizer(repo, data=lighter)
    vocab = fast.vocab()
    vocab_size = hparams.get("vocab_size", len(vocab))
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise InvalidConfigError(f"config.json: vocab_size must be a positive integer, not {vocab_size!r}")
    if vocab and max(vocab.values()) >= vocab_size:
        raise ConfigMismatchError(
            f"config.json: vocab_size {vocab_size} is smaller than the tokenizer (it has id {max(vocab.values())})")

    if table is not None:
        chkhsh = fast.pre_hash(table["chktxt"])
        if chkhsh not in table["hashes"] and lighter is not None:
            # the kept merges missed a word the model sees: ask the whole tokenizer before giving up
            fast = _FastTokenizer(repo)
            chkhsh = fast.pre_hash(table["chktxt"])
        bpe_pre = table["hashes"].get(chkhsh)
        if bpe_pre is None:
            raise UnsupportedTokenizerError(
                f"unrecognised BPE pre-tokenizer (hash {chkhsh}); "
                "if you know which llama.cpp pre-tokenizer it matches, pass --bpe-pre NAME")

    reverse = {tid: text for text, tid in vocab.items()}
    added_vocab = fast.added_vocab()
    added_by_id = fast.added_tokens()
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        if text in added_vocab:
            info = added_by_id.get(i)
            if info is None:
                info = added_by_id[added_vocab[text]]
            if not info.normalized:
                text = fast.roundtrip(text)
            if info.special or _does_token_look_special(text):
                types.append(CONTROL)
            else:
                text = text.replace(_SPM_SPACE, " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    assert bpe_pre is not None  # recognised, given, or refused above
    return tokens, types, bpe_pre, dict(added_vocab)


# --- the special vocab (gguf-py SpecialVocab, from memory) ----------------------------------------


class _SpecialVocab:
    """Merges, special ids, add-special flags, chat template and normalizer flags of a repo.

    Derived the way the reference's gguf-py ``SpecialVocab`` derives them; the one deliberate
    difference: the names of extra chat templates are written sorted (the reference uses set order,
    which changes from run to run).
    """

    def __init__(self, repo: _Repo, *, load_merges: bool = False, n_vocab: int | None = None,
                 special_types: Sequence[str] = _DEFAULT_SPECIAL_TYPES):
        self.repo = repo
        self.load_merges = load_merges
        self.n_vocab = n_vocab
        self.special_types = tuple(special_types)
        self.merges: list[str] = []
        self.special_ids: dict[str, int] = {}
        self.add_special: dict[str, bool] = {}
        self.chat_template: str | list | None = None
        self.lowercase: bool | None = None
        self.strip_accents: bool | None = None
        self._from_tokenizer_files()
        self._from_config_json()
        if self.load_merges and not self.merges:
            self._from_merges_txt()

    # -- writing --

    def write(self, w: gguf.GGUFWriter) -> None:
        if self.merges:
            w.add_token_merges(self.merges)
        for typ, tid in self.special_ids.items():
            if typ in _ID_KEYS:  # the reference skips types its writer has no method for
                w.add_uint32(_ID_KEYS[typ], tid)
        for typ, value in self.add_special.items():
            if typ in _ADD_KEYS:
                w.add_bool(_ADD_KEYS[typ], value)
        if self.chat_template is not None:
            _add_chat_template(w, self.chat_template)
        if self.lowercase is not None:
            w.add_bool(_KEY_LOWERCASE, self.lowercase)
        if self.strip_accents is not None:
            w.add_bool(_KEY_STRIP_ACCENTS, self.strip_accents)

    def set_special_token(self, typ: str, tid: Any) -> None:
        if not isinstance(tid, int):
            return
        if tid < 0:
            raise InvalidConfigError(f"invalid id for special token {typ}: {tid}")
        if self.n_vocab is not None and tid >= self.n_vocab:
            return  # out of range: the reference skips it with a warning
        self.special_ids.setdefault(typ, tid)

    # -- reading --

    def _from_merges_txt(self) -> None:
        text = self.repo.text("merges.txt")
        if text is None:
            return
        lines = text.splitlines()
        if lines and lines[0].strip().startswith("#"):
            lines = lines[1:]
        merges = []
        for line in lines:
            parts = line.strip().split(None, 3)
            if len(parts) == 2:
                merges.append(f"{parts[0]} {parts[1]}")
        self.merges = merges

    def _parse_normalizer(self, normalizer: dict) -> None:
        kind = normalizer.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            if "lowercase" in normalizer:
                self.lowercase = normalizer["lowercase"]
            if "strip_accents" in normalizer:
                self.strip_accents = normalizer["strip_accents"]
        elif kind == "Sequence":
            for sub in normalizer.get("normalizers", []):
                self._parse_normalizer(sub)

    def _load_merges(self, tokenizer: dict) -> None:
        merges = _dict_or_empty(tokenizer.get("model")).get("merges")
        if not isinstance(merges, list) or not merges:
            return
        joined = _joined_merges(merges)
        if joined is None:
            raise UnsupportedTokenizerError("tokenizer.json: unknown format of model.merges")
        self.merges = joined

    def _from_tokenizer_files(self) -> None:
        tokenizer = self.repo.tokenizer_json()
        added_tokens: Any = {}
        if tokenizer is not None:
            if self.load_merges:
                self._load_merges(tokenizer)
            if normalizer := tokenizer.get("normalizer"):
                self._parse_normalizer(normalizer)
            added_tokens = tokenizer.get("added_tokens", {})
        config = self.repo.json("tokenizer_config.json", dict)
        if config is not None:
            config = dict(config)  # the post-processor analysis below amends it
        if tokenizer:
            self._from_post_processor(tokenizer, config)
        if not config:
            return
        self._chat_template(config)
        for typ in self.special_types:
            flag = config.get(f"add_{typ}_token")
            if isinstance(flag, bool):
                self.add_special.setdefault(typ, flag)  # the post-processor's view wins
            content = _token_content(config.get(f"{typ}_token"))
            if content is None:
                continue
            tid = next((t.get("id") for t in added_tokens if t.get("content") == content), None)
            self.set_special_token(typ, tid)

    def _from_post_processor(self, tokenizer: dict, config: dict | None) -> None:
        cfg = config or {}
        bos, cls = cfg.get("bos_token"), cfg.get("cls_token")
        eos, sep = cfg.get("eos_token"), cfg.get("sep_token")
        if not bos and cls and config:
            config["bos_token"] = bos = cls
        if not eos and sep and config:
            config["eos_token"] = eos = sep
        post = tokenizer.get("post_processor")
        if not post:
            return
        for proc in post.get("processors", [post]):
            kind = proc.get("type")
            if kind == "ByteLevel":
                self.add_special.setdefault("bos", False)
                self.add_special.setdefault("eos", False)
            elif kind == "RobertaProcessing":
                self.add_special["bos"] = True
                self.add_special["eos"] = True
                self.add_special["sep"] = True
                if not cls and config:
                    config["cls_token"] = cls = proc.get("cls", [bos])[0]
                if not sep and config:
                    config["sep_token"] = sep = proc.get("sep", [eos])[0]
            elif kind == "TemplateProcessing":
                bos, cls, eos, sep = self._from_template(proc, config, bos, cls, eos, sep)

    def _from_template(self, proc: dict, config: dict | None, bos, cls, eos, sep):
        """Read which specials a simple TemplateProcessing adds (first/last of single, middle of pair)."""

        def special_id(item: dict) -> Any:
            return _dict_or_empty(item.get("SpecialToken")).get("id")

        single, pair = proc.get("single", []), proc.get("pair", [])
        first = last = None
        if len(single) > 1:
            if first := special_id(single[0]):
                if not config:
                    bos = first
                elif first not in (bos, cls):
                    if not bos:
                        config["bos_token"] = bos = first
                    if not cls:
                        config["cls_token"] = cls = first
                self.add_special["bos"] = first in (bos, cls)
            if last := special_id(single[-1]):
                if not config:
                    eos = last
                elif last != eos:
                    # the old EOS is kept as end-of-turn (or end-of-message) before being replaced
                    if "eot" not in self.special_types:
                        self.special_types += ("eot",)
                        config["eot_token"] = eos
                    elif "eom" not in self.special_types:
                        self.special_types += ("eom",)
                        config["eom_token"] = eos
                    config["eos_token"] = eos = last
                self.add_special["eos"] = last == eos
        if pair:
            start = 1 if first and special_id(pair[0]) == first else 0
            stop = -1 if last and special_id(pair[-1]) == last else None
            pair = pair[start:stop]
            if pair:
                seq_a = _dict_or_empty(pair[0].get("Sequence")).get("id")
                seq_b = _dict_or_empty(pair[-1].get("Sequence")).get("id")
                middle = pair[1:-1]
                if seq_a == "A" and seq_b == "B" and middle:
                    add_sep = False
                    entry = special_id(middle[0])
                    if entry and entry in (sep, eos) and not last:
                        add_sep = True
                    if len(middle) == 2:
                        entry = special_id(middle[1])
                        if entry and entry in (sep, eos):
                            add_sep = True
                    self.add_special["sep"] = add_sep
                    if add_sep and not sep and config:
                        config["sep_token"] = eos
        return bos, cls, eos, sep

    def _chat_template(self, config: dict) -> None:
        alt: str | list | None = None
        if "chat_template.jinja" in self.repo:
            alt = self.repo.text("chat_template.jinja")
            extra = sorted(n for n in self.repo.files
                           if n.startswith("additional_chat_templates/") and n.endswith(".jinja")
                           and "/" not in n[len("additional_chat_templates/"):])
            if extra:
                alt = [{"name": "default", "template": alt}]
                for name in extra:
                    stem = name[len("additional_chat_templates/"):-len(".jinja")]
                    alt.append({"name": stem, "template": self.repo.text(name)})
        elif "chat_template.json" in self.repo:
            alt = _dict_or_empty(self.repo.json("chat_template.json")).get("chat_template")
        template = config.get("chat_template", alt)
        if template is None or isinstance(template, (str, list)):
            self.chat_template = template

    def _from_config_json(self) -> None:
        config = self.repo.json("config.json") if "config.json" in self.repo else self.repo.hparams
        if not isinstance(config, dict):
            return
        text_config = config.get("text_config")
        for typ in self.special_types:
            tid = config.get(f"{typ}_token_id")
            if tid is None and text_config is not None:
                tid = _dict_or_empty(text_config).get(f"{typ}_token_id")
            self.set_special_token(typ, tid)


def _add_chat_template(w: gguf.GGUFWriter, template: str | list) -> None:
    """``tokenizer.chat_template`` (and named templates), as the reference's GGUFWriter writes them."""
    if isinstance(template, list):
        default = None
        names: list[str] = []
        for choice in template:
            choice = _dict_or_empty(choice)
            name = "".join(c if c in ascii_letters + digits else "_" for c in choice.get("name", ""))
            text = choice.get("template")
            if name and text is not None:
                if name == "default":
                    default = text
                else:
                    if name not in names:
                        names.append(name)
                    w.add_string(f"{_KEY_CHAT_TEMPLATE}.{name}", text)
        if names:
            w.add_array(_KEY_CHAT_TEMPLATES, sorted(names))
        if default is None:
            return
        template = default
    w.add_string(_KEY_CHAT_TEMPLATE, str(template))
