"""Whole-file writes: concurrent writers of one file never collide; a failed write leaves the old file."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from mitp.atomic import atomic_write, write_json_atomic, write_text_atomic


def test_concurrent_writers_of_one_file_all_succeed(tmp_path):
    target = tmp_path / "compare.json"
    texts = [f"{i}\n" * 2000 for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: write_text_atomic(target, t), texts * 4))
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_json_atomic(tmp_path / "results.json", {"accuracy": 0.5})

    def crash(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == '{\n  "accuracy": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_text_is_utf8_with_unix_line_ends(tmp_path):
    path = write_text_atomic(tmp_path / "a.jsonl", "é\nx\n")
    assert path.read_bytes() == "é\nx\n".encode()
