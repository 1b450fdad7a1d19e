"""Ray Data's names for a run's annotation files.

Its own small module on purpose: the write tasks unpickle this class, and importing it must
not import the model stages (torch), or every write-task worker grows by ~500 MB.
"""

from __future__ import annotations

from ray.data.datasource import FilenameProvider

from pipeline.store.sink import part_filename


class PartFilenames(FilenameProvider):
    """``pipeline.store.sink.part_filename`` for each write task of one run."""

    def __init__(self, run_index: int) -> None:
        super().__init__(file_format="parquet")
        self.run_index = run_index

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return part_filename(self.run_index, task_index, write_uuid)
