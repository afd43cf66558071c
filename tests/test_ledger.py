"""Round trips through the influence ledger: what is written is exactly what is read back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from iif_ray.ledger import (
    LEDGER_COLUMNS,
    LedgerWriter,
    ledger_columns,
    read_ledger,
    read_ledger_obs,
)

DERIVED = ("iteration", "env_steps", "learner", "row")  # filled in by ledger_columns
PER_RECORD = [c for c in LEDGER_COLUMNS if c not in DERIVED]


def _records(n: int, action: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-record columns as the learner hands them over (float64/object before typing)."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n)
    score[::3] = np.nan  # unscored records
    return {
        "episode_id": np.array([f"ep-{seed}-{i // 2}" for i in range(n)], dtype=object),
        "t": np.arange(n) + 10 * seed,
        "action": action,
        "reward": rng.normal(size=n),
        "advantage": rng.normal(size=n),
        "advantage_std": rng.normal(size=n),
        "value_target": rng.normal(size=n),
        "logp": -rng.random(n),
        "score": score,
        "kept": rng.random(n) < 0.5,
    }


def _column(table: pa.Table, name: str) -> np.ndarray:
    values = table.column(name).to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(table.schema.field(name).type):
        return np.stack(values)
    return values


def _assert_round_trip(table: pa.Table, written: dict[str, np.ndarray]) -> None:
    for name in LEDGER_COLUMNS:
        got, want = _column(table, name), written[name]
        if want.dtype.kind == "U":
            assert table.schema.field(name).type == pa.string(), name
            assert got.tolist() == want.tolist(), name
        else:
            assert got.dtype == want.dtype, name
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)  # NaN == NaN here


def _ledger_files(root: Path) -> list[str]:
    return sorted(os.listdir(root))


def test_ledger_columns_types_every_column_as_the_schema_says() -> None:
    """Readers (diagnostics, reports) rely on these dtypes, whatever the learner passed in."""
    cols = ledger_columns(iteration=3, env_steps=1200, learner=1,
                          **_records(5, np.arange(5, dtype=np.int32)))
    assert list(cols) == list(LEDGER_COLUMNS)
    assert cols["iteration"].tolist() == [3] * 5 and cols["iteration"].dtype == np.int64
    assert cols["env_steps"].tolist() == [1200] * 5 and cols["env_steps"].dtype == np.int64
    assert cols["learner"].tolist() == [1] * 5 and cols["learner"].dtype == np.int16
    assert cols["action"].dtype == np.int32  # the env's own action dtype is kept
    for name in ("reward", "advantage", "advantage_std", "value_target", "logp", "score"):
        assert cols[name].dtype == np.float32, name
    assert cols["kept"].dtype == np.bool_
    assert cols["episode_id"].dtype.kind == "U"
    assert np.isnan(cols["score"][::3]).all()


@pytest.mark.parametrize("obs_shape", [(7, 7, 3), (4,)])
def test_scalar_actions_and_observations_round_trip(tmp_path: Path,
                                                    obs_shape: tuple[int, ...]) -> None:
    """Images and flat vectors come back with their shape; every column value and dtype too."""
    n = 6
    cols = ledger_columns(iteration=1, env_steps=256, learner=0,
                          **_records(n, np.array([0, 1, 1, 0, 2, 1], dtype=np.int64)))
    obs = np.random.default_rng(1).integers(0, 255, size=(n, *obs_shape)).astype(np.float32)
    path = LedgerWriter(str(tmp_path)).write(1, 0, cols, obs=obs)
    assert Path(path) == tmp_path / "iter-000001-learner0.parquet"
    assert _ledger_files(tmp_path) == ["iter-000001-learner0.parquet"]  # no temporary left

    table, restored = read_ledger_obs(read_ledger(str(tmp_path)))
    assert "obs" not in table.column_names
    assert table.column_names == list(LEDGER_COLUMNS)
    _assert_round_trip(table, cols)
    assert restored is not None
    assert restored.shape == (n, *obs_shape) and restored.dtype == np.float32
    np.testing.assert_array_equal(restored, obs)


def test_vector_actions_are_a_fixed_size_list(tmp_path: Path) -> None:
    """Continuous actions keep their dimension and their float32 values."""
    n = 4
    action = np.random.default_rng(2).uniform(-1, 1, size=(n, 2)).astype(np.float32)
    cols = ledger_columns(iteration=2, env_steps=64, learner=0, **_records(n, action))
    LedgerWriter(str(tmp_path)).write(2, 0, cols)
    table = read_ledger(str(tmp_path))
    field = table.schema.field("action").type
    assert pa.types.is_fixed_size_list(field) and field.list_size == 2
    assert field.value_type == pa.float32()
    _assert_round_trip(table, cols)


def test_without_obs_the_reader_returns_none(tmp_path: Path) -> None:
    """Runs with ``ledger_obs=False`` must still read back, with no observations."""
    cols = ledger_columns(iteration=1, env_steps=8, learner=0,
                          **_records(3, np.zeros(3, dtype=np.int64)))
    LedgerWriter(str(tmp_path)).write(1, 0, cols)
    table = read_ledger(str(tmp_path))
    same, obs = read_ledger_obs(table)
    assert obs is None
    assert same.schema.equals(table.schema) and same.column_names == list(LEDGER_COLUMNS)
    _assert_round_trip(same, cols)  # NaN scores included, which Table.equals rejects


def test_rounds_and_learners_read_back_as_one_table(tmp_path: Path) -> None:
    """A run's ledger is many files; the reader must return all of them, round by round."""
    writer = LedgerWriter(str(tmp_path))
    written = {}
    # Written out of order: later rounds first, several learners per round.
    for seed, (iteration, learner, n) in enumerate([(2, 1, 3), (2, 0, 5), (1, 0, 4), (1, 1, 2)]):
        cols = ledger_columns(iteration=iteration, env_steps=100 * iteration, learner=learner,
                              **_records(n, np.arange(n, dtype=np.int64), seed=seed))
        obs = np.full((n, 3, 2), seed, dtype=np.float32)
        writer.write(iteration, learner, cols, obs=obs)
        written[(iteration, learner)] = (cols, obs)
    assert _ledger_files(tmp_path) == [f"iter-00000{i}-learner{j}.parquet"
                                       for i in (1, 2) for j in (0, 1)]

    table, obs = read_ledger_obs(read_ledger(str(tmp_path)))
    assert table.num_rows == 5 + 3 + 4 + 2
    assert obs is not None and obs.shape == (table.num_rows, 3, 2)
    iterations = _column(table, "iteration")
    assert (np.diff(iterations) >= 0).all()  # round by round
    learners = _column(table, "learner")
    for (iteration, learner), (cols, file_obs) in written.items():
        rows = np.flatnonzero((iterations == iteration) & (learners == learner))
        _assert_round_trip(table.take(pa.array(rows)), cols)
        np.testing.assert_array_equal(obs[rows], file_obs)
        assert (_column(table, "env_steps")[rows] == 100 * iteration).all()


def test_reader_ignores_temporary_files(tmp_path: Path) -> None:
    """A file still being written (``.tmp-*``) must never show up as records."""
    writer = LedgerWriter(str(tmp_path))
    cols = ledger_columns(iteration=1, env_steps=8, learner=0,
                          **_records(3, np.zeros(3, dtype=np.int64)))
    writer.write(1, 0, cols)
    # A half-written file and a complete one that was never renamed.
    (tmp_path / ".tmp-x.parquet").write_bytes(b"PAR1 not yet finished")
    LedgerWriter(str(tmp_path)).write(9, 0, cols)
    os.rename(tmp_path / "iter-000009-learner0.parquet", tmp_path / ".tmp-y.parquet")

    table = read_ledger(str(tmp_path))
    assert table.num_rows == 3
    assert set(_column(table, "iteration").tolist()) == {1}
    _assert_round_trip(table, cols)


def test_subset_of_columns_and_uri_root(tmp_path: Path) -> None:
    """``ledger_dir`` may be a URI (multi-node runs); column selection reads only those."""
    uri = f"file://{tmp_path}/ledger"
    cols = ledger_columns(iteration=4, env_steps=40, learner=0,
                          **_records(5, np.arange(5, dtype=np.int64)))
    LedgerWriter(uri).write(4, 0, cols)
    assert _ledger_files(tmp_path / "ledger") == ["iter-000004-learner0.parquet"]
    table = read_ledger(uri, columns=["score", "kept"])
    assert table.column_names == ["score", "kept"]
    np.testing.assert_array_equal(_column(table, "score"), cols["score"])
    np.testing.assert_array_equal(_column(table, "kept"), cols["kept"])


@pytest.mark.parametrize("with_obs", [False, True])
def test_empty_round_round_trips(tmp_path: Path, with_obs: bool) -> None:
    """A round with no records still writes a typed file the dataset reader accepts, with
    observations too (a module whose batch held no real rows)."""
    cols = ledger_columns(iteration=1, env_steps=0, learner=0,
                          **_records(0, np.zeros(0, dtype=np.int64)))
    assert all(len(v) == 0 for v in cols.values())
    obs = np.zeros((0, 7, 7, 3), np.float32) if with_obs else None
    LedgerWriter(str(tmp_path)).write(1, 0, cols, obs=obs)
    table, restored = read_ledger_obs(read_ledger(str(tmp_path)))
    assert table.num_rows == 0 and table.column_names == list(LEDGER_COLUMNS)
    assert table.schema.field("kept").type == pa.bool_()
    if with_obs:
        assert restored.shape == (0, 7, 7, 3)
    else:
        assert restored is None


@pytest.mark.parametrize("change", ["missing", "unknown", "both"])
def test_ledger_columns_rejects_wrong_column_names(change: str) -> None:
    """A silently missing column would only surface later, in a diagnostics report."""
    records = _records(3, np.zeros(3, dtype=np.int64))
    if change in ("missing", "both"):
        del records["logp"]
    if change in ("unknown", "both"):
        records["value"] = np.zeros(3)
    with pytest.raises(ValueError, match="ledger columns: missing") as err:
        ledger_columns(iteration=1, env_steps=0, learner=0, **records)
    if change != "unknown":
        assert "'logp'" in str(err.value)
    if change != "missing":
        assert "'value'" in str(err.value)


def test_ledger_columns_rejects_mismatched_lengths() -> None:
    """Misaligned columns would attribute scores to the wrong records."""
    records = _records(4, np.zeros(4, dtype=np.int64))
    records["score"] = records["score"][:3]
    with pytest.raises(ValueError, match=r"differ in length: \[3, 4\]"):
        ledger_columns(iteration=1, env_steps=0, learner=0, **records)


def test_per_record_names_match_the_schema() -> None:
    """The helper above must cover exactly the per-record columns, or the tests prove less."""
    assert set(PER_RECORD) == set(_records(1, np.zeros(1)))


def test_row_is_each_records_position_in_its_round(tmp_path: Path) -> None:
    """``row`` joins the ledgers of two runs record by record (episode ids are random)."""
    writer = LedgerWriter(str(tmp_path))
    for it, n in ((1, 5), (2, 3)):
        writer.write(it, 0, ledger_columns(iteration=it, env_steps=0, learner=0,
                                           **_records(n, np.zeros(n, dtype=np.int64))))
    table = read_ledger(str(tmp_path)).to_pandas()
    assert table["row"].dtype == np.int64
    assert table.groupby("iteration")["row"].apply(list).to_dict() == {1: [0, 1, 2, 3, 4],
                                                                      2: [0, 1, 2]}
