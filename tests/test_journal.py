import pytest

from synth.journal import Journal


def test_append_read_and_torn_tail(tmp_path):
    j = Journal(tmp_path / "rows.jsonl")
    j.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    with j.path.open("a") as f:  # a write killed halfway
        f.write('{"id": "c", "v"')
    assert [r["id"] for r in j.read()] == ["a", "b"]
    j.append([{"id": "c", "v": 3}])
    assert [r["id"] for r in j.read()] == ["a", "b", "c"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="rows.jsonl:2"):
        Journal(path).read()
