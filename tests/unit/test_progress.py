"""Progress lines come from durably written Parquet files; partial files are not counted."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.graph.progress import count_written_rows, format_eta, progress_line


def test_counts_complete_files_only_and_caches_footers(tmp_path):
    fs = fsspec.filesystem("file")
    pq.write_table(pa.table({"x": list(range(3))}), tmp_path / "run-000-part-000000-u.parquet")
    pq.write_table(pa.table({"x": list(range(7))}), tmp_path / "run-001-part-000000-v.parquet")
    pq.write_table(pa.table({"x": list(range(5))}), tmp_path / "run-001-part-000001-v.parquet")
    (tmp_path / "run-001-part-000002-v.parquet").write_bytes(b"PAR1 half written")
    (tmp_path / "notes.txt").write_text("ignored")
    cache: dict = {}
    assert count_written_rows(fs, str(tmp_path), cache, "run-001-") == 12
    assert len(cache) == 2
    assert count_written_rows(fs, str(tmp_path), cache) == 15
    assert count_written_rows(fs, str(tmp_path / "absent"), cache) == 0


def test_progress_line_and_eta():
    assert progress_line(50, 200, 25.0) == "50/200 images (25.0%), 2.00 images/s, ETA 1m15s"
    assert progress_line(0, 10, 3.0).endswith("ETA unknown")
    assert format_eta(3723) == "1h02m03s" and format_eta(6.4) == "6s"
