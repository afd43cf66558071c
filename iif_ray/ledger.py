"""The per-record influence ledger: its schemas, writer and reader, in one place.

Two schemas: transitions (classic RL, :data:`LEDGER_SCHEMA`) and prompt -> response sequences
(language models, :data:`SEQUENCE_LEDGER_SCHEMA`); one file layout for both.

One Parquet file per (round, learner): ``iter-000007-learner0.parquet``. Files are flat (no
hive directories, so the ``iteration`` column never clashes with a partition key) and written
to a temporary name first, then renamed: a reader never sees a half-written file.
``ledger_dir`` may be a local path or any URI pyarrow understands (``s3://``, ``gs://``),
which a multi-node run needs.

The round index is the ``iteration`` column (and ``iter-`` in file names), in both schemas:
the one place the project's word for it is not "round". ``progress.csv`` calls it ``round``
(:mod:`iif_ray.run.progress`); the ledger keeps ``iteration``, since the committed ledgers
and users' readers (``pyarrow.dataset`` filters, diagnostics) select on it and a rename
would break them.

Observations are optional (``ledger_obs=True``): stored flattened as a fixed-size list column
with their shape in the schema metadata, and restored to that shape by :func:`read_ledger_obs`.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Column -> numpy dtype it is stored with (``action`` keeps the env's own dtype).
LEDGER_SCHEMA: dict[str, type | None] = {
    "iteration": np.int64,
    "env_steps": np.int64,
    "learner": np.int16,
    "row": np.int64,  # the record's position in the round's ledger: a stable join key
    "episode_id": str,
    "t": np.int64,
    "action": None,
    "reward": np.float32,
    "advantage": np.float32,  # raw GAE
    "advantage_std": np.float32,  # standardised, as the loss and the scores use it
    "value_target": np.float32,
    "logp": np.float32,
    "score": np.float32,  # NaN where the round was not scored (plain PPO)
    "kept": bool,
}
LEDGER_COLUMNS = tuple(LEDGER_SCHEMA)
# Language-model runs: a record is one prompt -> response sequence.
SEQUENCE_LEDGER_SCHEMA: dict[str, type | None] = {
    "iteration": np.int64,
    "env_steps": np.int64,  # sequences sampled so far, this round's included
    "learner": np.int16,
    "row": np.int64,
    "group": np.int64,  # the prompt's index in the round: a group's responses share it
    "prompt": str,
    "response": str,
    "response_tokens": np.int32,
    "reward": np.float32,
    "advantage": np.float32,  # at the last response token, as the loss uses it
    "logp": np.float32,  # sum over the response's tokens, at collection
    "score": np.float32,  # NaN where the round was not scored (plain PPO)
    "kept": bool,
    # The reward was flipped on purpose (a run's reward_noise): ``reward`` is the flipped one.
    "corrupted": bool,
}
OBS_COLUMN = "obs"
_OBS_SHAPE_KEY = b"obs_shape"
# iter-000007-learner0.parquet: one file per (round, learner).
_FILE_NAME = re.compile(r"iter-(\d+)-learner(\d+)\.parquet")


def ledger_columns(*, iteration: int, env_steps: int, learner: int,
                   schema: Mapping[str, type | None] = LEDGER_SCHEMA,
                   **per_record: np.ndarray) -> dict[str, np.ndarray]:
    """One round's ledger columns, typed as the schema says.

    Args:
        iteration: the training round (1-based), the same for every record.
        env_steps: lifetime env steps sampled when the round was trained.
        learner: rank of the learner that scored these records.
        schema: :data:`LEDGER_SCHEMA` (transitions) or :data:`SEQUENCE_LEDGER_SCHEMA`.
        **per_record: one array per remaining column of the schema (``row``, the record's
            position, is added here).

    Returns:
        ``{column: array}`` in schema order, ready for :meth:`LedgerWriter.write`.

    Raises:
        ValueError: a column is missing or unknown, or the arrays differ in length.
    """
    constants = {"iteration": iteration, "env_steps": env_steps, "learner": learner}
    wanted = set(schema) - set(constants) - {"row"}
    if set(per_record) != wanted:
        raise ValueError(f"ledger columns: missing {sorted(wanted - set(per_record))}, "
                         f"unknown {sorted(set(per_record) - wanted)}")
    lengths = {len(v) for v in per_record.values()}
    if len(lengths) > 1:
        raise ValueError(f"ledger columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    derived = {**{k: np.full(n, v) for k, v in constants.items()}, "row": np.arange(n)}
    out: dict[str, np.ndarray] = {}
    for name, dtype in schema.items():
        values = derived[name] if name in derived else np.asarray(per_record[name])
        out[name] = values.astype(dtype) if dtype is not None else values
    return out


def _fs_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return fs, path.rstrip("/")


def _array(values: np.ndarray) -> pa.Array:
    """Scalars per row become a plain column; vectors (continuous actions) a list column."""
    values = np.asarray(values)
    if values.ndim <= 1:
        return pa.array(values)
    flat = values.reshape(len(values), int(np.prod(values.shape[1:])))  # -1 fails on 0 rows
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


@dataclass
class LedgerWriter:
    """Writes one Parquet file per (round, learner) under ``root`` (a path or a URI)."""

    root: str

    def __post_init__(self) -> None:
        self._fs, self._path = _fs_and_path(self.root)
        self._fs.create_dir(self._path, recursive=True)

    def file_name(self, round_index: int, learner: int) -> str:
        return f"{self._path}/iter-{round_index:06d}-learner{learner}.parquet"

    def write(self, round_index: int, learner: int, columns: Mapping[str, np.ndarray],
              obs: np.ndarray | None = None) -> str:
        """Write one round's records atomically (temporary name, then rename).

        Args:
            round_index: the round, which names the file.
            learner: the learner rank, which names the file.
            columns: the round's columns, as :func:`ledger_columns` returns them (in
                their schema's order).
            obs: ``[n, *obs_shape]`` observations to store beside them, or ``None``.

        Returns:
            The path of the file written.
        """
        arrays = {name: _array(values) for name, values in columns.items()}
        meta = {}
        if obs is not None:
            flat = obs.reshape(len(obs), int(np.prod(obs.shape[1:]))).astype(np.float32)
            arrays[OBS_COLUMN] = _array(flat)
            meta[_OBS_SHAPE_KEY] = ",".join(str(s) for s in obs.shape[1:]).encode()
        table = pa.table(arrays).replace_schema_metadata(meta or None)
        final = self.file_name(round_index, learner)
        tmp = f"{self._path}/.tmp-{uuid.uuid4().hex}.parquet"
        try:
            with self._fs.open_output_stream(tmp) as sink:
                pq.write_table(table, sink, compression="zstd")
            self._fs.move(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk: leave no temporary file
                self._fs.delete_file(tmp)
            raise
        return final


def remove_rounds_after(root: str, round_index: int) -> list[str]:
    """Delete the ledger files of rounds after ``round_index`` (a resumed run trains them
    again); return the paths removed."""
    fs, path = _fs_and_path(root)
    info = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    removed = []
    for entry in info:
        match = _FILE_NAME.fullmatch(entry.base_name)
        if match and int(match.group(1)) > round_index:
            fs.delete_file(entry.path)
            removed.append(entry.path)
    return removed


def ledger_dataset(root: str) -> ds.Dataset:
    """All ledger files under ``root`` as one ``pyarrow.dataset`` (temporary files skipped)."""
    fs, path = _fs_and_path(root)
    return ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"])


def read_ledger(root: str, columns: list[str] | None = None) -> pa.Table:
    """Every round's records under ``root`` as one table.

    Args:
        root: the ledger directory (a path or a URI).
        columns: columns to read; ``None`` reads all, ``obs`` included when stored.

    Returns:
        A ``pyarrow.Table``, rows in file order (round by round).
    """
    return ledger_dataset(root).to_table(columns=columns)


def read_ledger_obs(table: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
    """Split the ``obs`` column off a ledger table and restore each observation's shape.

    Returns:
        ``(table without obs, observations [n, *shape])``, or ``(table, None)`` when the run
        stored no observations.
    """
    if OBS_COLUMN not in table.column_names:
        return table, None
    meta = table.schema.metadata or {}
    shape = tuple(int(s) for s in meta.get(_OBS_SHAPE_KEY, b"").decode().split(",") if s)
    column = table.column(OBS_COLUMN)
    flat = (np.stack(column.to_numpy(zero_copy_only=False)) if len(column)
            else np.zeros((0, int(np.prod(shape)) if shape else 0), np.float32))
    obs = flat.reshape((len(flat), *shape)) if shape else flat
    return table.drop([OBS_COLUMN]), obs
