"""The plan's own metadata: keys in order as gguf's writer keeps them, and families adding through ``KeyWriter``."""

from __future__ import annotations

import gguf
import pytest
from gguf import GGUFValueType

from hfstream.kv import KeyWriter, Metadata


def adds(w: gguf.GGUFWriter) -> None:
    """A mix of the add_* methods families and the vocabulary call, with keys added again."""
    w.add_block_count(2)
    w.add_context_length(512)
    w.add_token_list(["a", "b", "c"])
    w.add_token_scores([0.0, -1.0, -2.0])
    w.add_chat_template([{"name": "default", "template": "{{x}}"}, {"name": "tool use", "template": "{{y}}"}])
    w.add_string("general.name", "")  # an empty string is not written
    w.add_array("some.empty", [])  # nor an empty array
    w.add_rope_dimension_sections([1, 2, 0, 0])
    w.add_context_length(1024)  # again: keeps its place, takes the new value
    w.add_key_value("custom.nested", [[1], [2, 3]], GGUFValueType.ARRAY)
    w.add_bool("custom.flag", True)
    w.add_block_count(3)


def as_tuples(kv) -> list[tuple]:
    return [(k, v.value, v.type, v.sub_type) for k, v in kv.items()]


def test_a_key_writer_holds_what_gguf_writer_holds():
    real = gguf.GGUFWriter(path=None, arch="qwen2")
    adds(real)
    metadata = Metadata()
    ours = KeyWriter(metadata, "qwen2")
    ours.add_architecture()
    adds(ours)
    assert as_tuples(metadata) == as_tuples(real.kv_data[0])
    assert list(metadata)[:3] == ["general.architecture", "qwen2.block_count", "qwen2.context_length"]
    assert metadata["qwen2.context_length"].value == 1024 and metadata["qwen2.block_count"].value == 3
    assert ours.kv_data[0]["qwen2.block_count"].value == 3  # what GGUFWriter-style readers look at


def test_the_metadata_is_changed_only_through_its_methods():
    metadata = Metadata()
    w = KeyWriter(metadata, "llama")
    with pytest.raises(TypeError):
        w.kv_data[0]["x"] = 1  # type: ignore[index]
    metadata.add("a", 1, GGUFValueType.UINT32)
    metadata.add("b", 2, GGUFValueType.UINT32)
    metadata.add("c", 3, GGUFValueType.UINT32)
    metadata.add_last("a", 4, GGUFValueType.UINT32)
    metadata.remove("b")
    metadata.remove("missing")
    assert metadata.values_by_key() == {"c": 3, "a": 4}
    other = Metadata()
    other.add("d", "x", GGUFValueType.STRING)
    other.add("c", 5, GGUFValueType.UINT32)
    metadata.merge(other)  # as if other's adds were made here: c keeps its place
    assert metadata.values_by_key() == {"c": 5, "a": 4, "d": "x"}


def test_same_entries_is_what_serializes_alike():
    """Keys compare in order and by value type: what ``layout`` would write differently is different."""
    import numpy as np

    from hfstream.kv import same_entries

    def md(*entries):
        m = Metadata()
        for key, value, vtype in entries:
            m.add(key, value, vtype)
        return m

    base = [("a.count", 2, GGUFValueType.UINT32), ("a.eps", 1e-5, GGUFValueType.FLOAT32),
            ("a.list", [1, 2], GGUFValueType.ARRAY), ("a.arr", np.arange(3, dtype=np.float32), GGUFValueType.ARRAY)]
    assert same_entries(md(*base), md(*base))
    assert same_entries(md(("x", float("nan"), GGUFValueType.FLOAT32)), md(("x", float("nan"), GGUFValueType.FLOAT32)))
    differing = [
        list(reversed(base)),  # order
        [base[0], base[1], base[2]],  # a key fewer
        [("a.count", 2, GGUFValueType.INT32), *base[1:]],  # value type
        [("a.count", 2.0, GGUFValueType.UINT32), *base[1:]],  # Python type
        [base[0], ("a.eps", -0.0, GGUFValueType.FLOAT32), *base[2:]],
        [*base[:2], ("a.list", [1, 3], GGUFValueType.ARRAY), base[3]],
        [*base[:3], ("a.arr", np.arange(3, dtype=np.float64), GGUFValueType.ARRAY)],  # dtype
    ]
    assert same_entries(md(base[0], ("a.eps", 0.0, GGUFValueType.FLOAT32)),
                        md(base[0], ("a.eps", 0.0, GGUFValueType.FLOAT32)))
    assert not same_entries(md(base[0], ("a.eps", 0.0, GGUFValueType.FLOAT32)),
                            md(base[0], ("a.eps", -0.0, GGUFValueType.FLOAT32)))
    for other in differing:
        assert not same_entries(md(*base), md(*other)), other
