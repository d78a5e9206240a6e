"""config.json -> the hparams dict llama.cpp's converter sees, read through transformers' config classes.

The reference converter does not read config.json as is: ``ModelBase.load_hparams`` takes
``AutoConfig.from_pretrained(dir, trust_remote_code=False).to_dict()`` and falls back to the raw JSON
only when that raises. The dict transformers gives holds class defaults and normalisations
(``head_dim``, ``rope_parameters``, ``num_key_value_heads``, ``layer_types``, ``dtype`` for
``torch_dtype``, ...) and the GGUF metadata depends on them, so the metadata follows the transformers
version installed beside the reference. hfstream asks the same classes (``normalize``): its output
matches the reference run with the same transformers version (the goldens: 5.23).

Why transformers itself and not a reproduction of it: the reproduction this replaces covered 15
model types in ~850 lines plus an 84 KB generated table, and every new family needed its
``__post_init__`` ported by hand; a step forgotten fell back to the raw config silently. The config
classes are pure Python and never need torch. The price is the import, ~1.5-2 s of CPU (transformers
reads ~3,000 files to build its lazy import table; 8 s more if it imports torch, which the worker
prevents): it runs in a worker process started with the conversion (``prepare``), so it overlaps
resolving the repo and reading the headers, and one worker serves every conversion of a process.

Never runs repo code: ``trust_remote_code`` is False, as in the reference; a config whose class
lives in the repo (``auto_map``) falls back to config.json as the reference does.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import io
import os
import pickle
import select
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NoReturn

from . import errors, jsonfile
from .errors import NotReproducibleError

__all__ = ["normalize", "as_written", "prepare", "answers_now", "load_config", "check_hparams", "NotReproducibleError",
           "transformers_version", "RecordedReads", "HparamReads"]

_WORKER_SCRIPT = Path(__file__).with_name("_autoconfig.py")


def prepare() -> None:
    """Start the worker now, so that transformers is imported by the time a config arrives."""
    _WORKER.start()


def answers_now(config_blob: bytes, *, name_or_path: str | None = None) -> bool:
    """Whether ``normalize`` would answer without waiting for transformers' import: the worker is
    ready (or this config was read before). Never waits."""
    return _WORKER.answers_now(config_blob, name_or_path or "")


def transformers_version() -> str:
    """The version of the transformers the worker reads configs with (starts it if needed)."""
    return _WORKER.version()


def normalize(config_blob: bytes, *, name_or_path: str | None = None,
              model_types: Iterable[str] = ()) -> dict:
    """config.json bytes -> the dict the reference converter sees: ``AutoConfig(...).to_dict()``, or
    config.json itself when AutoConfig raises; then ``load_hparams``' renames of nested configs
    (``llm_config``, ``lm_config``, ``thinker_config.text_config``, ``language_config``, ``lfm`` ->
    ``text_config``). ``text_config`` is not merged into the root: ``TextModel.__init__`` does that.

    ``config_blob`` must have passed ``load_config``. ``_name_or_path`` is ``name_or_path`` (the
    reference's local directory) or left out, and ``transformers_version`` (the installed
    transformers) is left out. ``model_types``: the config ``model_type``s the family reads; one of
    them unknown to the installed transformers raises NotReproducibleError instead of falling back,
    since the reference would then see different hparams than the family was written for.
    """
    config = load_config(config_blob)
    model_type = config.get("model_type")
    kind, value = _WORKER.ask(config_blob, name_or_path or "")
    if kind == "other_file":
        raise NotReproducibleError(f"config.json points to another configuration file ({value!r}); "
                                   "hfstream reads config.json only")
    if kind == "dict":
        hparams = value
        hparams.pop("transformers_version", None)
        if name_or_path is None:
            hparams.pop("_name_or_path", None)
        else:
            hparams["_name_or_path"] = str(name_or_path)
    else:  # AutoConfig raised: the reference reads config.json as is
        if kind == "unknown_type" and model_type in set(model_types):
            raise NotReproducibleError(
                f"config.json: model_type {model_type!r} is unknown to the installed transformers "
                f"{_WORKER.version()}; hfstream reads it with transformers' own config class "
                "(pip install -U transformers)")
        hparams = config
    return _load_hparams_renames(hparams)


def as_written(config_blob: bytes) -> dict:
    """config.json as it is, for the families whose reference class reads it without AutoConfig (the
    Mamba-2 ones: ``Mamba2Model.__init__`` opens config.json itself and only renames ``llm_config`` to
    ``text_config``). ``config_blob`` must have passed ``load_config``."""
    config = load_config(config_blob)
    if "llm_config" in config:
        config["text_config"] = config["llm_config"]
    return config


def _load_hparams_renames(config: dict) -> dict:
    # ModelBase.load_hparams, in its order
    if "llm_config" in config:
        config["text_config"] = config["llm_config"]
    if "lm_config" in config:
        config["text_config"] = config["lm_config"]
    if "thinker_config" in config:
        config["text_config"] = config["thinker_config"]["text_config"]
    if "language_config" in config:
        config["text_config"] = config["language_config"]
    if "lfm" in config:
        config["text_config"] = config["lfm"]
    return config


@dataclass
class HparamReads:
    """What was read of an hparams dict: each key asked for, as ``repr`` of its value then (None: it was
    absent), and the whole key list if it was walked. Plain values: it comes back from a forked child."""

    values: dict[str, str | None] = field(default_factory=dict)
    keys: tuple[str, ...] | None = None

    def agree(self, hparams: Mapping[str, Any]) -> bool:
        """Whether ``hparams`` answer every read the same way: same keys present, with values of the same
        ``repr`` (so of the same types: 1, 1.0 and True differ), and the same key list if it was walked."""
        if self.keys is not None and tuple(hparams) != self.keys:
            return False
        return all((repr(hparams[key]) if key in hparams else None) == shown for key, shown in self.values.items())


class RecordedReads(Mapping[str, Any]):
    """A read-only view of hparams that notes every read (``reads``).

    Code that reads its hparams only (a family's vocabulary) does the same with another dict that gives
    the same answers (``HparamReads.agree``): a vocabulary built from config.json as written can be
    kept once transformers' dict is in. Every way to read a mapping goes through ``__getitem__``,
    ``__iter__`` or ``__len__`` here; a write raises, and so does anything a dict has and a mapping
    has not (the vocabulary is then built again from the real hparams).
    """

    def __init__(self, hparams: Mapping[str, Any]):
        self._hparams = hparams
        self.reads = HparamReads()

    def __getitem__(self, key: str) -> Any:
        try:
            value = self._hparams[key]
        except KeyError:
            self.reads.values.setdefault(key, None)
            raise
        if key not in self.reads.values:
            self.reads.values[key] = repr(value)
        return value

    def __iter__(self) -> Iterator[str]:
        self.reads.keys = tuple(self._hparams)
        return iter(self.reads.keys)

    def __len__(self) -> int:
        self.reads.keys = tuple(self._hparams)
        return len(self.reads.keys)


class _PlainUnpickler(pickle.Unpickler):
    """Dicts, lists, tuples, strings and numbers only: the worker has no reason to send anything else."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a value of type {module}.{name}")


class _Worker:
    """The transformers worker of this process, started once and reused; answers are memoized."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid_owner = -1
        self._version: str | None = None
        self._memo: dict[tuple[bytes, str], tuple[str, Any]] = {}
        self._atexit_registered = False

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._pid_owner == os.getpid() and self._proc.poll() is None:
            return
        self._version = None
        # run as a file, not ``-m``: no hfstream import, and its directory not put on sys.path (it
        # holds a safetensors.py); sys.path[0] ('' for -c) dropped so the cwd cannot shadow a package
        code = "import sys, runpy; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", code, str(_WORKER_SCRIPT)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, close_fds=True,
                                          start_new_session=True)  # Ctrl-C is the parent's to handle
        except OSError as e:
            raise errors.HelperDiedError(f"reading config.json: cannot start a Python process ({e})") from None
        self._pid_owner = os.getpid()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def stop(self) -> None:
        """Kill the worker (it holds nothing but an import), e.g. at exit while it is still importing."""
        proc, self._proc = self._proc, None
        if proc is not None and self._pid_owner == os.getpid() and proc.poll() is None:
            proc.kill()
            proc.wait()

    def version(self) -> str:
        with self._lock:
            self._start()
            self._wait_ready()
            assert self._version is not None
            return self._version

    def answers_now(self, config_blob: bytes, name_or_path: str) -> bool:
        if not self._lock.acquire(blocking=False):
            return False  # another thread is asking: this one would wait for it
        try:
            if _key(config_blob, name_or_path) in self._memo or self._version is not None:
                return True
            proc = self._proc
            if proc is None or proc.stdout is None or self._pid_owner != os.getpid():
                return False
            # its first frame (ready, or EOF if it died) is there: reading it does not wait
            return bool(select.select([proc.stdout], [], [], 0)[0])
        finally:
            self._lock.release()

    def ask(self, config_blob: bytes, name_or_path: str) -> tuple[str, Any]:
        key = _key(config_blob, name_or_path)
        with self._lock:
            if key in self._memo:
                return _copy(self._memo[key])
            self._start()
            self._wait_ready()
            text = config_blob.decode("utf-8")  # load_config has checked it
            assert self._proc is not None and self._proc.stdin is not None
            try:
                _frame_out(self._proc.stdin, pickle.dumps((text, name_or_path), protocol=4))
            except OSError:
                self._died()
            answer = self._read()
            if answer[0] == "error":
                raise errors.InvalidConfigError(f"config.json: transformers could not read it ({answer[1]})")
            self._memo[key] = answer
            return _copy(answer)

    def _wait_ready(self) -> None:
        if self._version is not None:
            return
        kind, value = self._read()
        if kind != "ready":
            self._proc = None
            raise errors.UnsupportedArchitectureError(f"reading config.json needs transformers: {value}")
        self._version = value

    def _read(self) -> tuple[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        frame = _frame_in(self._proc.stdout)
        if frame is None:
            return self._died()
        try:
            answer = _PlainUnpickler(io.BytesIO(frame)).load()
        except pickle.UnpicklingError as e:
            raise errors.InvalidConfigError(f"config.json: transformers gave {e}, which hfstream does not read") from None
        if not (isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], str)):
            raise errors.HelperDiedError("reading config.json: the transformers worker answered nonsense")
        return answer

    def _died(self) -> NoReturn:
        proc, self._proc = self._proc, None
        code = proc.wait() if proc is not None else None
        raise errors.HelperDiedError(f"reading config.json: the transformers worker ended (status {code}) "
                                     "before answering")


def _key(config_blob: bytes, name_or_path: str) -> tuple[bytes, str]:
    return hashlib.sha256(config_blob).digest(), name_or_path


def _frame_out(stream, payload: bytes) -> None:
    stream.write(len(payload).to_bytes(4, "little") + payload)
    stream.flush()


def _frame_in(stream) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "little")
    body = stream.read(size)
    return body if len(body) == size else None


def _copy(answer: tuple[str, Any]) -> tuple[str, Any]:
    """A memoized answer handed out again: callers change the dict they get."""
    return answer[0], copy.deepcopy(answer[1])


_WORKER = _Worker()


# --- reading config.json, and the sanity of what families read from it ----------------------------

def load_config(blob: bytes, name: str = "config.json") -> dict:
    """config.json bytes -> the parsed object; every way it can be unusable is an InvalidConfigError.

    Duplicate keys keep the last value, as ``json.load`` (and so transformers) does.
    """
    return jsonfile.load(blob, name, jsonfile.CONFIG, expect=dict)


#: Integer hyperparameters families read, by meaning: (the config.json spellings, smallest, largest).
#: Every spelling present is checked. The bounds lie far outside any real model; they keep a hostile
#: config.json from making hfstream divide by zero or size a table by it. The block count has none but
#: GGUF's (uint32): the weights bound it (a layer without tensors is a missing tensor, checked before
#: transformers sees the config: ``plan._check_layer_count``), and names are mapped one at a time.
INT_HPARAMS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "block count": (("num_hidden_layers", "n_layers", "n_layer", "num_layers"), 1, (1 << 32) - 1),
    "embedding length": (("hidden_size", "n_embd", "dim"), 1, 1 << 20),
    "head count": (("num_attention_heads", "n_head", "n_heads"), 1, 1 << 12),
    "head count kv": (("num_key_value_heads", "n_kv_heads", "n_head_kv"), 1, 1 << 12),
    "head size": (("head_dim",), 1, 1 << 16),
    "feed forward length": (("intermediate_size", "n_inner", "moe_intermediate_size",
                             "shared_expert_intermediate_size"), 1, 1 << 22),
    "vocab size": (("vocab_size",), 1, 1 << 24),
    "context length": (("max_position_embeddings", "n_positions", "n_ctx"), 1, 1 << 32),
    "expert count": (("num_local_experts", "num_experts", "n_routed_experts"), 0, 1 << 16),
    "experts used": (("num_experts_per_tok", "num_experts_per_token"), 0, 1 << 16),
}
#: Float hyperparameters: must be finite numbers above zero when set.
FLOAT_HPARAMS: tuple[str, ...] = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "rope_theta")
#: (a, b, unless): hyperparameter a must be a multiple of b, unless the config sets ``unless``
#: (meanings of INT_HPARAMS; each side is the first spelling present).
DIVISIBLE_HPARAMS: tuple[tuple[str, str, str | None], ...] = (
    ("head count", "head count kv", None),  # grouped-query attention: whole groups
    ("embedding length", "head count", "head size"),  # the head size is hidden / heads unless head_dim says
)


def check_hparams(hparams: Mapping[str, Any], *, ints: Mapping[str, tuple[tuple[str, ...], int, int]] = INT_HPARAMS,
                  floats: tuple[str, ...] = FLOAT_HPARAMS,
                  divisible: tuple = DIVISIBLE_HPARAMS, name: str = "config.json") -> None:
    """Refuse hyperparameters that are present but insane (wrong type, out of bounds, indivisible).

    Families call this on the hparams they read (``text_config`` merged in) before using any of
    them; a family with keys of its own passes its own tables. Absent keys and ``null`` are left to
    the family (which knows its defaults). Raises InvalidConfigError naming the key and the value.
    """
    first: dict[str, tuple[str, int]] = {}
    for meaning, (keys, low, high) in ints.items():
        for key in keys:
            value = hparams.get(key)
            if value is None:
                continue
            if type(value) is not int or not low <= value <= high:
                shown = value if type(value) is int and abs(value) < 10**30 else _short_repr(value)
                raise errors.InvalidConfigError(
                    f"{name}: {key} is {shown}; expected an integer from {low} to {high}")
            first.setdefault(meaning, (key, value))
    for key in floats:
        value = hparams.get(key)
        if value is None:
            continue
        if type(value) not in (int, float) or not 0 < value < float("inf"):
            raise errors.InvalidConfigError(f"{name}: {key} is {_short_repr(value)}; expected a positive number")
    for a, b, unless in divisible:
        if a in first and b in first and (unless is None or unless not in first) and first[a][1] % first[b][1]:
            (ka, va), (kb, vb) = first[a], first[b]
            raise errors.InvalidConfigError(f"{name}: {ka} {va} is not a multiple of {kb} {vb}")


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
