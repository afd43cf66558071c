"""Per-record influence ledgers as Parquet: one file per (iteration, learner).

Files are flat (``iter-000007-learner0.parquet``; no hive directories, so the ``iteration``
column never clashes with a partition key) and written to a temporary name first, then
renamed: a reader never sees a half-written file. ``ledger_dir`` may be a local path or any
URI pyarrow understands (``s3://``, ``gs://``), which is what a multi-node run needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

LEDGER_COLUMNS = (
    "iteration", "env_steps", "learner", "episode_id", "t", "action", "reward",
    "advantage", "advantage_std", "value_target", "logp", "score", "kept",
)


def _fs_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return fs, path.rstrip("/")


def _array(values: np.ndarray) -> pa.Array:
    """Scalars per row become a plain column; vectors (continuous actions) a list column."""
    values = np.asarray(values)
    if values.ndim <= 1:
        return pa.array(values)
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


@dataclass
class LedgerWriter:
    root: str

    def __post_init__(self) -> None:
        self._fs, self._path = _fs_and_path(self.root)
        self._fs.create_dir(self._path, recursive=True)

    def file_name(self, iteration: int, learner: int) -> str:
        return f"{self._path}/iter-{iteration:06d}-learner{learner}.parquet"

    def write(
        self,
        iteration: int,
        learner: int,
        columns: Mapping[str, np.ndarray],
        obs: np.ndarray | None = None,
    ) -> str:
        arrays = {name: _array(columns[name]) for name in LEDGER_COLUMNS}
        meta = {}
        if obs is not None:
            arrays["obs"] = _array(obs.reshape(len(obs), -1).astype(np.float32))
            meta[b"obs_shape"] = ",".join(str(s) for s in obs.shape[1:]).encode()
        table = pa.table(arrays).replace_schema_metadata(meta or None)
        final = self.file_name(iteration, learner)
        tmp = f"{self._path}/.tmp-{uuid.uuid4().hex}.parquet"
        with self._fs.open_output_stream(tmp) as sink:
            pq.write_table(table, sink, compression="zstd")
        self._fs.move(tmp, final)
        return final


def ledger_dataset(root: str) -> ds.Dataset:
    """All ledger files under ``root`` as one ``pyarrow.dataset`` (temporary files skipped)."""
    fs, path = _fs_and_path(root)
    return ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"])


def read_ledger(root: str, columns: list[str] | None = None) -> pa.Table:
    return ledger_dataset(root).to_table(columns=columns)
