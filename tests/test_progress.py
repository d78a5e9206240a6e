"""Progress as a user sees it: from the first request, by phase, in one unit system, ending at 100%.

The display itself is checked with a clock the test moves; the conversion's reports through the API;
the screen of a real terminal (tmux) while a conversion is held midway by the fixture Hub's Gate and
after it ends; a log (stderr not a terminal) gets no carriage returns.
"""

from __future__ import annotations

import io
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

import hfstream
from hfstream.display import Display
from hfstream.options import PHASES, Progress

from .conftest import cli_env

REPO = "hfs-test/tiny-llama-sharded"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Utf8Terminal(io.StringIO):
    encoding = "utf-8"  # type: ignore[assignment]


def _progress(**kw) -> Progress:
    return Progress(source="org/model@main", started=1000.0, **kw)


# --------------------------------------------------------------------------- the display


def _screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: a carriage return goes back to column 0, ESC[K clears the rest."""
    lines, col = [""], 0
    for part in re.split(r"(\r|\n|\x1b\[K)", raw):
        if part == "\r":
            col = 0
        elif part == "\n":
            lines.append("")
            col = 0
        elif part == "\x1b[K":
            lines[-1] = lines[-1][:col]
        elif part:
            line = lines[-1].ljust(col)
            lines[-1] = line[:col] + part + line[col + len(part):]
            col += len(part)
    return [line.rstrip() for line in lines if line.strip()]


def test_terminal_one_line_redrawn_that_ends_at_100_percent():
    clock, out = Clock(), Utf8Terminal()
    d = Display(out, terminal=True, clock=clock, width=100)
    p = _progress()
    d.update(p)
    assert out.getvalue() == "\rresolving org/model@main\x1b[K"
    p.phase = "headers"
    p.bytes_fetched = 1_200_000
    clock.now += 0.5
    d.update(p)
    p.phase, p.bytes_to_fetch = "vocabulary", 50_300_000
    clock.now += 1
    p.bytes_fetched = 5_200_000
    d.update(p)
    assert out.getvalue().endswith("\rbuilding the vocabulary: 5.2 MB fetched, 3.5 MB/s, ETA 13 s\x1b[K")
    p.phase, p.total_bytes = "tensors", 25_400_031
    for step in range(1, 10):
        clock.now += 1
        p.bytes_fetched += 4_000_000
        p.bytes_written = step * 2_500_000
        d.update(p)
        assert "\n" not in out.getvalue()  # redrawn in place, never a new line
    line = _screen(out.getvalue())[-1]
    assert line.startswith("tensors  88% |") and "| 22.5/25.4 MB written, 41.2 MB fetched, 4.0 MB/s, ETA 2 s" in line
    assert len(line) <= 99
    p.phase, p.bytes_written, p.bytes_fetched = "done", p.total_bytes, 50_300_000
    clock.now += 1
    d.update(p)
    d.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    final = _screen(out.getvalue())
    assert final == ["done 100% |" + "█" * 30 + "| 25.4/25.4 MB written, 50.3 MB fetched, 4.4 MB/s, in 12 s"]


def test_one_unit_system_and_a_percentage_that_never_shows_100_early():
    clock, out = Clock(), io.StringIO()
    d = Display(out, terminal=True, clock=clock, width=200)
    p = _progress(phase="tensors", total_bytes=50_331_679, bytes_written=50_331_648, bytes_fetched=48 << 20)
    d.update(p)
    line = _screen(out.getvalue())[-1]
    assert "99%" in line and "100%" not in line  # 31 bytes of padding short of the file
    sizes = re.findall(r"[\d.]+ ?([kMG]i?B)\b", line)
    assert sizes and set(sizes) == {"MB"}  # no MiB beside MB


def test_notes_go_above_the_line_which_is_drawn_again():
    clock, out = Clock(), io.StringIO()
    d = Display(out, terminal=True, clock=clock, width=100)
    p = _progress(phase="tensors", total_bytes=1000, bytes_written=500, bytes_fetched=600)
    d.update(p)
    d.note("retrying in 4 s (3/8): model.safetensors: HTTP 503 from http://hub")
    d.note("retrying in 8 s (4/8): model.safetensors: HTTP 503 from http://hub")
    screen = _screen(out.getvalue())
    assert screen[:2] == ["hfstream: retrying in 4 s (3/8): model.safetensors: HTTP 503 from http://hub",
                          "hfstream: retrying in 8 s (4/8): model.safetensors: HTTP 503 from http://hub"]
    assert screen[2].startswith("tensors  50% |") and len(screen) == 3


def test_resuming_is_said_once():
    out = io.StringIO()
    d = Display(out, terminal=False, clock=Clock())
    p = _progress(phase="tensors", total_bytes=1000, units_total=51, units_resumed=45, units_done=45)
    d.update(p)
    d.update(p)
    assert out.getvalue() == "hfstream: resuming: 45 of 51 units already done\n"


def test_not_a_terminal_plain_lines_every_interval_and_the_last_one():
    clock, out = Clock(), io.StringIO()
    d = Display(out, terminal=False, clock=clock, interval=30)
    p = _progress()
    for phase in PHASES[:3]:
        p.phase = phase
        d.update(p)
    assert out.getvalue() == ""  # a short run says nothing
    p.phase, p.total_bytes, p.bytes_to_fetch = "tensors", 100_000_000, 100_000_000
    for second in range(1, 75):
        clock.now += 1
        p.bytes_fetched = p.bytes_written = second * 1_000_000
        d.update(p)
    p.phase, p.bytes_written = "done", p.total_bytes
    d.update(p)
    d.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "hfstream: tensors  30%: 30.0/100.0 MB written, 30.0 MB fetched, 1.0 MB/s, ETA 1 min 10 s",
        "hfstream: tensors  60%: 60.0/100.0 MB written, 60.0 MB fetched, 1.0 MB/s, ETA 40 s",
        "hfstream: done 100%: 100.0/100.0 MB written, 74.0 MB fetched, 1.0 MB/s, in 1 min 14 s"]


# --------------------------------------------------------------------------- the conversion's reports


def test_the_api_callback_sees_every_phase_and_bytes_from_the_first_request(fresh_hub, tmp_path):
    seen: list[tuple[str, int, int, int]] = []

    def on_progress(p: Progress) -> None:
        seen.append((p.phase, p.bytes_fetched, p.bytes_written, p.total_bytes))

    r = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path, on_progress=on_progress, max_memory="1M")
    phases = [ph for i, (ph, *_) in enumerate(seen) if i == 0 or seen[i - 1][0] != ph]
    assert phases == list(PHASES)
    assert seen[0] == ("resolving", 0, 0, 0)  # before the first request
    # bytes were reported fetched before any tensor was written
    assert any(ph in ("headers", "vocabulary") and fetched > 0 for ph, fetched, _, _ in seen)
    written = [w for ph, _, w, _ in seen if ph in ("tensors", "done")]
    assert written == sorted(written)
    assert seen[-1] == ("done", r.bytes_fetched, r.path.stat().st_size, r.path.stat().st_size)


def test_a_dry_run_reports_its_phases_too(fresh_hub):
    phases: list[str] = []
    hfstream.convert(REPO, dry_run=True, on_progress=lambda p: phases.append(p.phase))
    assert list(dict.fromkeys(phases)) == ["resolving", "headers", "vocabulary", "done"]


def test_a_log_gets_no_carriage_returns(fresh_hub, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "--outtype", "q8_0", "-o", str(tmp_path)],
                          env=cli_env(fresh_hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # a short run in a log: nothing, and never a bar's carriage returns
    assert proc.stdout.count("\n") == 1


# --------------------------------------------------------------------------- a real terminal


class Tmux:
    """A tmux server of its own (its own socket), one window of a known size, read as a screen."""

    def __init__(self, tmp_path):
        self.socket = f"hfstream-test-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path

    def run(self, args: list[str], env: dict[str, str]) -> str:
        """Start ``hfstream args`` in the window; returns the channel signalled when it exits."""
        channel = f"done-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items() if k in _PASSED)
        command = (f"cd {_quote(str(self.tmp_path))} && env {exports} {_quote(sys.executable)} -m hfstream "
                   f"{' '.join(_quote(a) for a in args)}; echo EXIT=$?; tmux -L {self.socket} wait-for -S {channel}")
        self._tmux("new-session", "-d", "-x", "160", "-y", "30", "-s", "t", "sh", "-c", command)
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on")
        return channel

    def screen(self) -> list[str]:
        # with its scrollback: tmux scrolls a line up when it marks the pane dead
        text = self._tmux("capture-pane", "-p", "-S", "-", "-t", "t").stdout
        return [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("Pane is dead")]

    def wait_for(self, channel: str) -> None:
        self._tmux("wait-for", channel, timeout=600)

    def wait_until(self, condition, what: str) -> list[str]:
        """The screen once ``condition(screen)`` holds (a hang guard of 120 s, not a timing assumption)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = self.screen()
            if condition(screen):
                return screen
            time.sleep(0.05)
        pytest.fail(f"the screen never showed {what}: {self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)

    def _tmux(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=timeout,
                              check=True)


_PASSED = ("HF_ENDPOINT", "PYTHONPATH", "HF_HOME", "PATH", "LANG", "LC_ALL")


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux(tmp_path)
    yield t
    t.kill()


@pytest.fixture
def own_hub(fixture_root):
    """A fixture Hub of its own: the tests set its gate and faults."""
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


def test_the_screen_shows_progress_from_the_first_request_and_ends_at_100_percent(tmux, own_hub, tmp_path):
    from fixtures.hub import Gate

    own_hub.gate = Gate(allow=0)  # every tensor range held: the headers and small files only
    env = cli_env(own_hub, HF_HOME=str(tmp_path / "hf"), LANG="C.UTF-8")
    done = tmux.run(["convert", REPO, "--outtype", "q8_0", "-o", "out/"], env)
    assert own_hub.gate.wait_held()
    # held before any tensor byte arrived: the screen already says what it does and what it fetched
    fetched = re.compile(r"[1-9][\d.]* [kM]B fetched")
    held = tmux.wait_until(lambda s: any(fetched.search(line) for line in s), "the bytes fetched")
    assert len(held) == 1 and re.match(r"(reading config, tokenizer and headers|building the vocabulary|tensors +0%)", held[0]), held
    own_hub.gate.open()
    tmux.wait_for(done)
    screen = tmux.screen()
    assert screen[-1] == "EXIT=0"
    m = re.fullmatch(r"done 100% \|█{30}\| ([\d.]+)/([\d.]+) MB written, ([\d.]+) MB fetched, .* MB/s, in \d+ s",
                     screen[-3])
    assert m and m.group(1) == m.group(2), screen
    result = screen[-2]
    assert result.startswith("out/Tiny-Llama-Sharded-3.3M-Q8_0.gguf  (") and f"{m.group(2)} MB written" in result
    assert len(screen) == 3, screen  # nothing else: no stray half-drawn bars


def test_a_retry_is_said_once_above_an_unbroken_line(tmux, own_hub, tmp_path):
    from fixtures.hub import Fault

    own_hub.faults.rules = [Fault("503", origin="storage", ranged=True, count=1, path=r"/lfs/")]
    env = cli_env(own_hub, HF_HOME=str(tmp_path / "hf"), LANG="C.UTF-8")
    done = tmux.run(["convert", REPO, "--outtype", "q8_0", "-o", "out/"], env)
    tmux.wait_for(done)
    screen = tmux.screen()
    assert screen[-1] == "EXIT=0"
    assert len(screen) == 4, screen
    assert re.fullmatch(r"hfstream: retrying in [\d.]+ s \(1/8\): \S+\.safetensors: .*503.*", screen[0]), screen
    assert screen[1].startswith("done 100% |")


def test_a_resumed_run_says_so(own_hub, tmp_path):
    from fixtures.hub import Gate

    from .test_kill_resume import _journal

    own_hub.gate = Gate(allow=6)
    out = tmp_path / "out.gguf"
    args = [sys.executable, "-m", "hfstream", "convert", REPO, "--outtype", "q8_0", "--max-memory", "1M",
            "--connections", "2", "-o", str(out)]
    env = cli_env(own_hub, HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert own_hub.gate.wait_held()
    from hfstream.writer import journal_path

    while not (journal_path(out).exists() and _journal(out)):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    done = len(_journal(out))
    own_hub.gate.open()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    m = re.fullmatch(r"hfstream: resuming: (\d+) of (\d+) units already done\n", rerun.stderr)
    assert m and int(m.group(1)) >= done and int(m.group(1)) < int(m.group(2)), rerun.stderr
    assert f"resumed {m.group(1)} of {m.group(2)} units" in rerun.stdout
