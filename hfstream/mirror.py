"""Scheduled mirror jobs: a TOML manifest of repos -> GGUF files, converted only when something changed.

    [defaults]                       # optional, applies to every model
    outtypes = ["q8_0"]
    target_dir = "mirror/{name}"     # a local directory, and/or
    target_repo = "me/{name}-GGUF"   # a Hub repo to publish to (templates: {org} {name} {repo} {outtype})

    [[model]]
    repo = "org/name"
    revision = "main"                # branch, tag or sha
    outtypes = ["q8_0", "f16"]
    # any other key is a convert option: bpe_pre, max_memory, connections, split_max_size, ...

Idempotence: a state file remembers, per (repo, commit sha, outtype, options, hfstream version),
what was done; an unchanged entry costs one API call (resolving the revision) and no weights.
The outtypes of one model that must be (re)made, into the same target, are converted in one pass
(``--outtype q8_0,f16``): every source byte is fetched once for all of them, and each output is still
recorded, skipped and resumed on its own.
With ``target_repo`` each output is uploaded as soon as the conversion hands it over (and, with no
``target_dir``, deleted from the disk right after), then one commit per pass (the outtypes converted
together), guarded by the head it was built on, adds the files and an updated model card (``publish.py``). The repo is created (or
write access checked) before converting, so a missing write token costs no conversion.
A lock file stops two runs from working on the same state. Each run writes a JSON report and
exits 0 (all converted or skipped), 75 (some failed, all retryable: run again later) or 76
(some failed for good: fix the manifest or wait for upstream).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import string
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from . import errors, fanout, jsonfile, options, writer
from ._version import __version__

EXIT_OK = 0
EXIT_RETRYABLE = 75  # EX_TEMPFAIL: a scheduler should retry later
EXIT_PERMANENT = 76

#: manifest keys that are not convert options
_ENTRY_KEYS = {"repo", "revision", "outtypes", "target_dir", "target_repo"}
#: what ``target_dir`` and ``target_repo`` templates may name, and nothing else (no attributes,
#: indexes, conversions or format specs: ``{repo.__class__}`` would reach into Python)
TEMPLATE_FIELDS = ("org", "name", "repo", "outtype")
#: convert options a manifest may set, with the TOML types each takes (declared with the option)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {f.name: f.metadata["manifest"] for f in options.fields()
                                              if f.metadata["manifest"]}


@dataclass(frozen=True)
class Entry:
    """One (repo, outtype) job of a manifest."""

    repo: str
    revision: str
    outtype: str
    options: tuple[tuple[str, Any], ...] = ()
    target_dir: str | None = None
    target_repo: str | None = None

    def fill(self, template: str) -> str:
        org, _, name = self.repo.rpartition("/")
        return template.format(org=org, name=name, repo=self.repo, outtype=self.outtype)

    @property
    def place(self) -> tuple[str, str, str | None, str | None]:
        """What decides the output's file name and where it lands: the repo, the outtype, the target
        directory and repo. Two entries with the same place write one file."""
        return (self.repo, self.outtype.lower(), self.fill(self.target_dir) if self.target_dir else None,
                self.fill(self.target_repo) if self.target_repo else None)

    def key(self, sha: str) -> str:
        """What decides whether the entry must run again: repo, commit, outtype, options, version."""
        blob = json.dumps([self.repo, sha, self.outtype, list(self.options), self.target_dir, self.target_repo,
                           __version__], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def same_pass(self, sha: str) -> tuple:
        """Entries (outtypes) with the same value here are converted in one pass: the same model at the
        same commit, the same options, and the same places (a template with ``{outtype}`` gives each
        outtype a place of its own, and so a pass of its own)."""
        _, _, target_dir, target_repo = self.place
        return (self.repo, sha, self.options, target_dir, target_repo)


@dataclass
class Outcome:
    repo: str
    revision: str
    outtype: str
    status: str  # converted | skipped | failed
    commit: str = ""
    reason: str = ""
    retryable: bool = False
    exit_code: int = 0
    outputs: list[str] = field(default_factory=list)
    published: str = ""
    seconds: float = 0.0
    bytes_written: int = 0
    #: bytes fetched by the conversion; a pass that made several outtypes counts them on its first
    #: outcome only (sums over outcomes stay right), and names them all in ``fetched_with``
    bytes_fetched: int = 0
    fetched_with: list[str] = field(default_factory=list)


def load_manifest(path: Path) -> list[Entry]:
    """Parse and validate a manifest; every problem is one ManifestError line naming the entry."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ManifestError(f"{path}: no such manifest") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise errors.ManifestError(f"{path}: not valid TOML ({e})") from None
    defaults = data.get("defaults", {})
    models = data.get("model", [])
    if not isinstance(defaults, dict) or not isinstance(models, list) or not models:
        raise errors.ManifestError(f"{path}: needs at least one [[model]] table (and [defaults] must be a table)")
    unknown = set(data) - {"defaults", "model"}
    if unknown:
        raise errors.ManifestError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    entries: list[Entry] = []
    #: where each entry's file goes -> the models (numbers) that write there
    places: dict[tuple, list[int]] = {}
    for i, raw in enumerate(models, 1):
        if not isinstance(raw, dict):
            raise errors.ManifestError(f"{path}: model #{i} is not a table")
        merged = {**defaults, **raw}
        where = f"{path}: model #{i}"
        repo = merged.get("repo")
        if not isinstance(repo, str) or not repo:
            raise errors.ManifestError(f"{where}: 'repo' must be a non-empty string")
        revision = merged.get("revision", "main")
        outtypes = merged.get("outtypes", ["auto"])
        if not isinstance(revision, str) or not isinstance(outtypes, list) or not outtypes \
                or not all(isinstance(o, str) for o in outtypes):
            raise errors.ManifestError(f"{where} ({repo}): 'revision' must be a string, 'outtypes' a list of names")
        for k in merged:
            if k not in _ENTRY_KEYS and k not in _OPTION_TYPES:
                table = "[defaults]" if k in defaults and k not in raw else where.rpartition(": ")[2]
                raise errors.ManifestError(f"{path}: unknown key {k!r} in {table} ({repo}){_did_you_mean(k)}")
        target_dir, target_repo = merged.get("target_dir"), merged.get("target_repo")
        if target_dir is None and target_repo is None:
            raise errors.ManifestError(f"{where} ({repo}): no target_dir or target_repo (per model or in [defaults])")
        for key in ("target_dir", "target_repo"):
            if merged.get(key) is not None:
                _check_template(merged[key], key, f"{where} ({repo})")
        options = {}
        for k, v in merged.items():
            if k in _ENTRY_KEYS:
                continue
            if not isinstance(v, _OPTION_TYPES[k]) or isinstance(v, bool):
                raise errors.ManifestError(f"{where} ({repo}): option {k!r} has the wrong type")
            options[k] = tuple(v) if isinstance(v, list) else v
        for outtype in outtypes:
            entries.append(Entry(repo=repo, revision=revision, outtype=outtype.lower(),
                                 options=tuple(sorted(options.items())),
                                 target_dir=target_dir, target_repo=target_repo))
            places.setdefault(entries[-1].place, []).append(i)
    for (repo, outtype, target_dir, target_repo), models in places.items():
        if len(models) > 1:
            which = (f"models #{models[0]} and #{models[1]} would both write" if models[0] != models[1]
                     else f"model #{models[0]} would twice write")
            raise errors.ManifestError(
                f"{path}: {which} {repo} {outtype} to {target_dir or target_repo} (one file: its name says "
                "neither the revision nor the options): give one its own target_dir or target_repo")
    return entries


def _check_template(value: Any, key: str, where: str) -> None:
    """A target template: a non-empty string whose fields are bare names from TEMPLATE_FIELDS."""
    fields = " ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    if not isinstance(value, str) or not value:
        raise errors.ManifestError(f"{where}: {key!r} must be a non-empty string")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as e:
        raise errors.ManifestError(f"{where}: {key} {_short(value)} is not a valid template ({e})") from None
    for _, name, spec, conversion in parts:
        if name is not None and (name not in TEMPLATE_FIELDS or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise errors.ManifestError(f"{where}: {key} {_short(value)} uses {_short(shown)}; "
                                       f"a template may only use {fields}")


def _short(value: object, limit: int = 60) -> str:
    """repr of a value from the manifest, cut so a hostile one cannot flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(_ENTRY_KEYS | set(_OPTION_TYPES)), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class State:
    """The state file: entry key -> what was produced. Written atomically after every entry."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.done = _done_entries(path)
            except errors.ManifestError as e:
                raise errors.ManifestError(f"{e.message} (move it away to start over)") from None

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        blob = json.dumps({"version": 1, "done": self.done}, indent=1, sort_keys=True).encode("utf-8")
        try:
            fd = writer.create_new(tmp, os.O_WRONLY)  # never through a link planted at the name
            try:
                os.write(fd, blob)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            raise writer.write_error(e, tmp) from None


def _done_entries(path: Path) -> dict[str, dict[str, Any]]:
    """The ``done`` map of a state file, each entry checked for the fields a run reads."""
    try:
        with open(path, "rb") as f:
            blob = f.read(jsonfile.STATE.max_bytes + 1)  # one byte more than allowed is enough to refuse it
    except OSError as e:
        raise errors.ManifestError(f"{path}: cannot read the state file ({e.strerror})") from None
    data = jsonfile.load(blob, f"{path}: the state file", jsonfile.STATE, expect=dict)
    done = data.get("done", {})
    jsonfile.check_type(done, f"{path}: 'done'", dict, jsonfile.STATE)
    for key, entry in done.items():
        jsonfile.check_type(entry, f"{path}: entry {key[:40]!r}", dict, jsonfile.STATE)
        outputs = entry.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(p, str) for p in outputs) \
                or not isinstance(entry.get("published", ""), str):
            raise errors.ManifestError(f"{path}: entry {key[:40]!r} has 'outputs' that are not paths, "
                                       "or a 'published' that is not a commit")
    return done


@contextlib.contextmanager
def locked(state_path: Path) -> Iterator[None]:
    """Hold ``<state>.lock`` for the run; a second run on the same state fails at once.

    The file goes when the run ends. It is removed while still locked, and a run that locked a file
    which is no longer the one at the path (removed meanwhile) starts over with the new one, so two
    runs never both hold a lock.
    """
    lock_path = state_path.with_name(state_path.name + ".lock")
    while True:
        try:  # a link planted at the name is refused, never followed (and truncated)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise writer.write_error(e, lock_path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.LockHeldError(f"another mirror run holds {lock_path}") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@dataclass(frozen=True)
class Job:
    """Entries to convert at one commit in one pass (outtypes of one model with the same
    ``Entry.same_pass``): what a mirror engine (``fanout``) runs."""

    entries: tuple[Entry, ...]
    sha: str

    @property
    def connections(self) -> int:
        return int(dict(self.entries[0].options).get("connections", options.default_of("connections")))

    def with_connections(self, n: int) -> Job:
        opts = tuple(sorted({**dict(self.entries[0].options), "connections": n}.items()))
        return replace(self, entries=tuple(replace(e, options=opts) for e in self.entries))


def run_job(job: Job) -> list[Outcome]:
    """An engine's work: ``run_entries`` for the job's entries and commit."""
    return run_entries(job.entries, job.sha)


def run_entry(entry: Entry, sha: str, convert: Callable[..., Any] | None = None) -> Outcome:
    """Convert (and publish) one entry at one commit. Never raises for an expected failure."""
    return run_entries((entry,), sha, convert)[0]


def run_entries(entries: tuple[Entry, ...] | list[Entry], sha: str,
                convert: Callable[..., Any] | None = None) -> list[Outcome]:
    """Convert (and publish) entries that differ only in their outtype, at one commit, in one pass:
    one conversion with all their outtypes, so every source byte is fetched once. One Outcome per
    entry, in order. Never raises for an expected failure (then every entry failed alike)."""
    import hfstream

    convert = convert or hfstream.convert
    started = time.monotonic()
    entry = entries[0]
    assert all(e.same_pass(sha) == entry.same_pass(sha) for e in entries), "one pass is one model into one place"
    outcomes = [Outcome(repo=e.repo, revision=e.revision, outtype=e.outtype, status="converted", commit=sha)
                for e in entries]
    try:
        options = dict(entry.options)
        publisher = None
        if entry.target_repo is not None:
            from .publish import Publisher

            # before converting: a repo we may not write to fails now, not after the conversion
            publisher = Publisher(entry.fill(entry.target_repo), token=options.get("token"),
                                  retries=options.get("retries", 8))
        if entry.target_dir is not None:
            out_dir = Path(entry.fill(entry.target_dir))
            out_dir.mkdir(parents=True, exist_ok=True)
        else:
            # named after the entry's key (any outtype: the pass's files are named by type), so an
            # interrupted conversion resumes from its journal on this machine; in the user's own
            # cache, so nobody else can have put a journal there
            out_dir = work_dir(entry.key(sha) if len(entries) == 1 else replace(entry, outtype="*").key(sha))
        uploaded: list[Path] = []

        def shard_written(path: Path) -> None:
            # each shard goes up as soon as it is complete and, without a target_dir, leaves the disk
            # right after, before the next shard is even created: one shard on disk at a time
            assert publisher is not None
            publisher.upload(Path(path), delete_after=entry.target_dir is None)
            uploaded.append(Path(path))

        if publisher is not None:
            options["on_shard_written"] = shard_written
        outtypes = [e.outtype for e in entries]
        result = convert(entry.repo, outtype=outtypes[0] if len(outtypes) == 1 else ",".join(outtypes), revision=sha,
                         outfile=out_dir, force=True, **options)
        made = _outputs_by_entry(result, len(entries))
        for outcome, (paths, size, outtype) in zip(outcomes, made):
            outcome.outputs = [str(p) for p in paths]
            outcome.bytes_written = size
        outcomes[0].bytes_fetched = int(getattr(result, "bytes_fetched", 0) or 0)
        if len(entries) > 1:
            for outcome in outcomes:
                outcome.fetched_with = outtypes
        if publisher is not None:
            for paths, _, _ in made:
                for p in paths:
                    if p not in uploaded:  # a convert that does not report shards (tests' doubles)
                        publisher.upload(p, delete_after=entry.target_dir is None)
            published = publisher.finish(source_repo=entry.repo, source_commit=sha,
                                         outtype={p.name: outtype for paths, _, outtype in made for p in paths})
            for outcome in outcomes:
                outcome.published = published
                if entry.target_dir is None:
                    outcome.outputs = []
            if entry.target_dir is None:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
    except errors.HfstreamError as e:
        for outcome in outcomes:
            outcome.status, outcome.reason, outcome.retryable, outcome.exit_code = \
                "failed", manifest_words(e.message), e.retryable, e.exit_code
    except Exception as e:  # a bug must not stop the other entries
        for outcome in outcomes:
            outcome.status, outcome.reason, outcome.exit_code = "failed", f"internal error: {type(e).__name__}: {e}", 1
    for outcome in outcomes:
        outcome.seconds = round(time.monotonic() - started, 3)
    return outcomes


def _outputs_by_entry(result: Any, n: int) -> list[tuple[list[Path], int, str]]:
    """(paths, size, outtype) of each of ``n`` outtypes a conversion was given, in that order.

    A run's ``outputs`` go by kind, then outtype (the text model's of every outtype, then the
    projector's when it writes one too), so output k is the outtype k mod n's."""
    outputs = getattr(result, "outputs", None) or [result]  # a convert that reports one output (tests' doubles)
    if len(outputs) % n:
        raise AssertionError(f"{len(outputs)} outputs for {n} outtypes")
    made: list[tuple[list[Path], int, str]] = [([], 0, "") for _ in range(n)]
    for k, out in enumerate(outputs):
        paths, size, outtype = made[k % n]
        made[k % n] = (paths + [Path(p) for p in getattr(out, "paths", None) or [out.path]],
                       size + int(getattr(out, "output_size", 0) or 0), outtype or str(getattr(out, "outtype", "")))
    return made


def work_dir(name: str) -> Path:
    """``<cache>/mirror/<name>``, where a conversion bound only for a Hub repo is written: created
    0700, and refused (OutputWriteError) unless it and its parent are directories of this user that
    nobody else may write. A resume there can then only find files this user made."""
    from . import settings

    base = settings.cache_dir() / "mirror"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_private(base)
        target = base / name
        target.mkdir(exist_ok=True, mode=0o700)
        _check_private(target)
    except OSError as e:
        raise writer.write_error(e, base) from None
    return target


def _check_private(path: Path) -> None:
    st = os.lstat(path)
    uid = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else (
            f"owned by uid {st.st_uid}" if st.st_uid != uid else f"writable by others (mode {st.st_mode & 0o777:o})")
        raise errors.OutputWriteError(f"the work directory {path} is {what}, not private to this user: "
                                      "remove it, or set HFSTREAM_CACHE to a directory of your own")


def manifest_words(message: str) -> str:
    """An error message in a manifest's words: a convert option named by its flag (``pass --token``,
    ``--bpe-pre NAME``) is named as the manifest key that sets it (``token``, ``bpe_pre = "NAME"``)."""
    import re

    flags = {flag: f for f in options.fields() for flag in f.metadata["flags"] if flag.startswith("--")}

    def key(m: re.Match) -> str:
        f = flags.get(m.group(2))
        if f is None or not f.metadata["manifest"]:
            return m.group(0)
        named = f"`{f.name} = \"{m.group(3).strip()}\"`" if m.group(3) else f"`{f.name}`"
        return f"set {named} in the manifest" if m.group(1) else f"the manifest's {named}"

    return re.sub(r"(pass )?(--[a-z][a-z-]*)((?: [A-Z][A-Z_=]*)?)(?![\w-])", key, message)


def mirror(manifest: Path, *, state_path: Path | None = None, report_path: Path | None = None,
           engine: str | fanout.Engine = "serial", workers: int = 2, hub_connections: int = 16,
           dry_run: bool = False, endpoint: str | None = None, token: str | None = None,
           on_outcome: Callable[[Outcome], None] | None = None) -> tuple[int, list[Outcome]]:
    """Run a manifest. Returns the exit code and one Outcome per entry (also written as the report).

    ``engine``: a ``fanout`` engine, or the name of one (``serial``, ``dask``; ``workers`` and
    ``hub_connections`` are the Dask engine's). ``on_outcome``: called with each entry's outcome as
    soon as it is known (skipped and failed-to-resolve ones first, then conversions as they finish)."""
    from . import hub, settings

    entries = load_manifest(manifest)
    if isinstance(engine, str):
        engine = fanout.engine(engine, workers=workers, hub_connections=hub_connections)
    state_path = state_path or manifest.with_name(manifest.name + ".state.json")
    endpoint = (endpoint or settings.endpoint()).rstrip("/")
    with locked(state_path):
        state = State(state_path)
        outcomes: list[Outcome | None] = [None] * len(entries)
        todo: list[tuple[int, Entry, str, str]] = []
        shas: dict[tuple[str, str], str] = {}
        keys: dict[int, str] = {}
        # Which entry each output file is. Two entries of different repos can still get one file name
        # (the names come from the models' own metadata, unknown before converting): the second to
        # write it fails, and the first is converted again next time, since its file was overwritten.
        owner: dict[str, int] = {}

        def record(i: int, key: str | None, outcome: Outcome) -> None:
            if outcome.status == "converted" and key is not None:
                shared = next((p for p in outcome.outputs if owner.get(p, i) != i), None)
                if shared is not None:
                    first = entries[owner[shared]]
                    outcome.status, outcome.exit_code, outcome.retryable = "failed", errors.ManifestError.exit_code, False
                    outcome.reason = (f"its output {shared} is also the output of {first.repo}@{first.revision} "
                                      f"{first.outtype}: give them different target_dir")
                    state.done.pop(keys[owner[shared]], None)
                else:
                    owner.update((p, i) for p in outcome.outputs)
                    state.done[key] = {"repo": outcome.repo, "commit": outcome.commit, "outtype": outcome.outtype,
                                       "outputs": outcome.outputs, "published": outcome.published,
                                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                state.save()
            outcomes[i] = outcome
            if on_outcome is not None:
                on_outcome(outcome)

        for i, entry in enumerate(entries):
            try:
                tok = dict(entry.options).get("token") or settings.token(token)
                if (entry.repo, entry.revision) not in shas:
                    snap = hub.resolve(entry.repo, entry.revision, endpoint, tok,
                                       retries=dict(entry.options).get("retries", 8),
                                       read_timeout=dict(entry.options).get("read_timeout", 60.0))
                    shas[(entry.repo, entry.revision)] = snap.sha
                sha = shas[(entry.repo, entry.revision)]
            except errors.HfstreamError as e:
                record(i, None, Outcome(entry.repo, entry.revision, entry.outtype, "failed",
                                        reason=manifest_words(e.message), retryable=e.retryable,
                                        exit_code=e.exit_code))
                continue
            key = keys[i] = entry.key(sha)
            previous = state.done.get(key)
            if previous and all(Path(p).exists() for p in previous.get("outputs", [])):
                record(i, None, Outcome(entry.repo, entry.revision, entry.outtype, "skipped", commit=sha,
                                        reason="unchanged since the last run", outputs=previous.get("outputs", []),
                                        published=previous.get("published", "")))
                continue
            if dry_run:
                record(i, None, Outcome(entry.repo, entry.revision, entry.outtype, "skipped", commit=sha,
                                        reason="dry run: would convert"))
                continue
            todo.append((i, entry, sha, key))

        owner.update((p, i) for i, key in keys.items() for p in state.done.get(key, {}).get("outputs", []))
        # the outtypes of one model into one place go in one pass (fetched once), in manifest order
        passes: dict[tuple, list[tuple[int, Entry, str, str]]] = {}
        for item in todo:
            passes.setdefault(item[1].same_pass(item[2]), []).append(item)
        groups = list(passes.values())
        jobs = [Job(tuple(entry for _, entry, _, _ in group), group[0][2]) for group in groups]
        # each outcome is recorded (and the state saved) as soon as its pass is done, in any order
        for n, pass_outcomes in engine.run(run_job, jobs):
            for (i, _, _, key), outcome in zip(groups[n], pass_outcomes):
                record(i, key, outcome)

    final = [o for o in outcomes if o is not None]
    if report_path is not None:
        report_path.write_text(json.dumps({"hfstream": __version__, "manifest": str(manifest),
                                           "entries": [asdict(o) for o in final]}, indent=1), encoding="utf-8")
    failed = [o for o in final if o.status == "failed"]
    if not failed:
        return EXIT_OK, final
    return (EXIT_RETRYABLE if all(o.retryable for o in failed) else EXIT_PERMANENT), final
