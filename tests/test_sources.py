"""Inputs read in parts (what `index --engine ray` hands its actors): the parts put together are the whole input."""

from __future__ import annotations

import json

import pytest

from longvec.index import InvalidInputError
from longvec.index.sources import jsonl_parts, read_jsonl


def _ids(path, parts):
    return [d.doc_id for start, stop, line in parts for d in read_jsonl(path, start, stop, line)]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
def test_jsonl_parts_cover_every_line_once(tmp_path, newline, trailing):
    lines = [json.dumps({"id": f"d{i}", "text": "x" * (i % 50 + 1)}) for i in range(200)]
    lines[17] = lines[60] = ""  # blank lines are skipped wherever a part starts or ends
    text = newline.join(lines) + (newline if trailing else "")
    path = tmp_path / "docs.jsonl"
    path.write_bytes(text.encode())
    whole = [d.doc_id for d in read_jsonl(path)]
    assert len(whole) == 198
    for part_bytes in (1, 100, 1000, 10**9):
        parts = jsonl_parts(path, part_bytes)
        assert parts[0][0] == 0 and parts[-1][1] == len(text.encode())
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))  # contiguous
        assert _ids(path, parts) == whole


def test_a_bad_line_in_a_part_is_named_by_its_line_number(tmp_path):
    lines = [json.dumps({"id": f"d{i}", "text": "t"}) for i in range(50)]
    lines[37] = '{"id": "d37", "text": '
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    parts = jsonl_parts(path, 200)
    assert len(parts) > 5 and not any(line == 38 for _, _, line in parts)  # line 38 is inside a part
    with pytest.raises(InvalidInputError, match=r"docs\.jsonl:38: "):
        for start, stop, line in parts:
            list(read_jsonl(path, start, stop, line))


def test_parquet_parts_follow_row_groups_and_read_back_in_order(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="parquet inputs need pyarrow (longvec[ray]; make install has it)")
    import pyarrow.parquet as pq

    from longvec.index.sources import parquet_parts, read_parquet

    rows = [{"id": f"d{i}", "text": f"text {i} " * (1 + i % 7), "metadata": json.dumps({"i": i})} for i in range(500)]
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=50)
    group_bytes = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    for part_bytes in (10**9, 3 * group_bytes, group_bytes // 3, 1):
        parts = parquet_parts(path, part_bytes)
        assert parts[0][0] == 0 and parts[-1][1] == 500
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        if part_bytes >= group_bytes:  # whole row groups only
            assert all(start % 50 == 0 and (stop % 50 == 0 or stop == 500) for start, stop in parts)
        docs = [d for start, stop in parts for d in read_parquet(path, start, stop)]
        assert [d.doc_id for d in docs] == [r["id"] for r in rows]
        assert docs[123].metadata == {"i": 123} and docs[123].text == rows[123]["text"]
    assert len(parquet_parts(path, 3 * group_bytes)) == 4  # 10 groups, 3 per part
    pq.write_table(pa.Table.from_pylist([{"id": "x", "text": "t", "metadata": "{not json"}]), tmp_path / "bad.parquet")
    with pytest.raises(InvalidInputError, match=r"bad\.parquet: row 0: field 'metadata' is not JSON"):
        list(read_parquet(tmp_path / "bad.parquet"))
