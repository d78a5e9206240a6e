"""Planning at DeepSeek-V3's scale: 163 shards, ~92k source tensors, 690 GB of FP8, from headers only.

The repo (``fixtures/at_scale.py``) is DeepSeek-V3's config.json and its real-sized safetensors headers
over holes. ``--dry-run`` must ask ``/resolve/`` once per shard, read each header with one range
(DeepSeek-V3's headers, ~70 KB, fit the first read), never read tensor data, and plan DeepSeek-V3's
1,086 output tensors with the MTP block left out. Time and memory are measured, not asserted here.
"""

from __future__ import annotations

import collections
import re

import pytest

from fixtures import at_scale
from fixtures.hub import FixtureHub
from hfstream import cli
from hfstream.settings import FIRST_HEADER_READ


@pytest.fixture(scope="module")
def scale_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("at-scale")
    repo = at_scale.build_deepseek_v3(root)
    with FixtureHub(root) as hub:
        yield hub, repo


def test_deepseek_v3_dry_run_reads_one_header_per_shard_and_no_data(scale_hub, monkeypatch, tmp_path, capsys):
    hub, repo = scale_hub
    hub.clear_log()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["convert", repo, "--outtype", "q8_0", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert not list(tmp_path.glob("*.gguf*"))  # nothing written

    tensors = at_scale.deepseek_v3_tensors()
    shards = [f"model-{i:05d}-of-000163.safetensors" for i in range(1, 164)]
    # one /resolve/ per shard ...
    resolved = collections.Counter(e["path"].rsplit("/", 1)[1] for e in hub.log
                                   if e["origin"] == "hub" and "/resolve/" in e["path"] and e["path"].endswith(".safetensors"))
    assert resolved == {s: 1 for s in shards}
    # ... and one read of its header, from byte 0, no more than the first read's length
    reads = [e for e in hub.log if e["origin"] == "storage" and e["range"] and e["status"] == 206]
    headers_of = {e["path"] for e in reads}
    assert len(reads) == len(shards) == len(headers_of)
    assert all(e["range"] == f"bytes=0-{FIRST_HEADER_READ - 1}" for e in reads)
    assert sum(e["bytes_sent"] for e in hub.log if e["origin"] == "storage") < 200 * FIRST_HEADER_READ

    # the plan: 61 blocks (the MTP block 61 left out, its bytes never counted), every expert stacked
    names = set(re.findall(r"^(\S+\.weight|\S+\.bias)\s", out, flags=re.M))
    assert len(names) == 1086 and "1086 tensors, " in out
    assert "blk.60.ffn_down_exps.weight" in names and "blk.3.exp_probs_b.bias" in names
    assert not any(n.startswith("blk.61.") for n in names) and "blk.0.ffn_gate_exps.weight" not in names
    assert {"blk.0.attn_k_b.weight", "blk.0.attn_v_b.weight"} <= names and "blk.0.attn_kv_b.weight" not in names
    main_bytes = sum(nbytes for name, _, nbytes, _ in tensors if not name.startswith("model.layers.61."))
    assert f"would fetch {main_bytes:,d} bytes of tensor data" in out
