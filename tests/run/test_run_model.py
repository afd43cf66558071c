"""The run model without either engine: kinds, the progress schema, rewind, legacy LM dirs."""

from __future__ import annotations

import csv
import json
import math

import pytest

from iif_ray.run import (
    CLASSIC,
    LM,
    ProgressWriter,
    RunKindError,
    learner_state_path,
    ledger_dir,
    progress_path,
    read_progress,
    read_run_spec,
    read_summary,
    rewind,
    run_kind,
    write_run_spec,
    write_summary,
)

FIELDS = ("round", "reward", "eval")  # an engine's schema


def _here(run_dir) -> dict[str, str]:
    """What a spec read back says about its directory: where it lies now."""
    return {"out_dir": str(run_dir.resolve())}


def _ledger_files(run) -> list[int]:
    return sorted(int(p.name[5:11]) for p in ledger_dir(run).glob("iter-*.parquet"))


def _run_with_rounds(run, n: int) -> None:
    """A run directory whose progress and ledger hold rounds 1..n (no checkpoint yet)."""
    write_run_spec(run, {"algo": "x"}, LM)
    writer = ProgressWriter(run, FIELDS)
    for k in range(1, n + 1):
        writer.write({"round": k, "reward": k / 3, **({"eval": 1.5} if k % 2 == 0 else {})})
    writer.close()
    ledger_dir(run).mkdir()
    for k in range(1, n + 1):
        (ledger_dir(run) / f"iter-{k:06d}-learner0.parquet").write_bytes(b"")
    write_summary(run, {"done": True})


@pytest.mark.parametrize("kind", [CLASSIC, LM])
def test_kind_round_trips_through_run_json(tmp_path, kind):
    write_run_spec(tmp_path, {"algo": "iif", "seed": 3}, kind)
    assert run_kind(tmp_path) == kind
    # the envelope is removed
    assert read_run_spec(tmp_path) == {"algo": "iif", "seed": 3, **_here(tmp_path)}
    assert read_run_spec(tmp_path, kind) == {"algo": "iif", "seed": 3, **_here(tmp_path)}
    other = LM if kind == CLASSIC else CLASSIC
    with pytest.raises(RunKindError, match="holds a run of iif-ray train"):
        read_run_spec(tmp_path, other)


def test_a_run_json_without_kind_is_classic_and_no_run_json_is_no_run(tmp_path):
    assert run_kind(tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"holds no LM run \(no run.json\)"):
        read_run_spec(tmp_path, LM)
    (tmp_path / "run.json").write_text(json.dumps({"algo": "ppo"}))
    assert run_kind(tmp_path) == CLASSIC and read_run_spec(tmp_path, CLASSIC) == {"algo": "ppo",
                                                                        **_here(tmp_path)}
    with pytest.raises(ValueError, match="unknown run kind"):
        write_run_spec(tmp_path, {}, "dpo")


def test_progress_writer_takes_the_engines_schema(tmp_path):
    _run_with_rounds(tmp_path, 3)
    with progress_path(tmp_path).open() as f:
        header = next(csv.reader(f))
    assert header == list(FIELDS)
    rows = read_progress(tmp_path)
    assert [r["round"] for r in rows] == [1, 2, 3] and isinstance(rows[0]["round"], int)
    assert rows[1]["eval"] == 1.5 and math.isnan(rows[0]["eval"])  # absent: nan
    with pytest.raises(ValueError, match="starts with 'round'"):
        ProgressWriter(tmp_path, ("reward", "round"))


def test_rewind_keeps_rows_up_to_the_checkpoint_round(tmp_path):
    _run_with_rounds(tmp_path, 4)
    before = progress_path(tmp_path).read_text().splitlines()
    learner_state_path(tmp_path).parent.mkdir()
    seen = []

    def restore(checkpoint):
        seen.append(checkpoint)
        return 2

    rows = rewind(tmp_path, FIELDS, restore)
    assert seen == [tmp_path / "checkpoint"]
    assert [r["round"] for r in rows] == [1, 2]
    # Kept rows stay exactly as written; later rounds' ledger files and the summary go.
    assert progress_path(tmp_path).read_text().splitlines() == before[:3]
    assert _ledger_files(tmp_path) == [1, 2]
    with pytest.raises(FileNotFoundError):
        read_summary(tmp_path)
    # Appending after a rewind continues the file.
    writer = ProgressWriter(tmp_path, FIELDS, append=True)
    writer.write({"round": 3, "reward": 0.0})
    writer.close()
    assert [r["round"] for r in read_progress(tmp_path)] == [1, 2, 3]


def test_rewind_without_a_checkpoint_starts_over(tmp_path):
    _run_with_rounds(tmp_path, 2)
    assert rewind(tmp_path, FIELDS, lambda _: 2) == []  # no checkpoint/: nothing to restore
    assert read_progress(tmp_path) == [] and _ledger_files(tmp_path) == []


def test_rewind_replaces_progress_whole(tmp_path, monkeypatch):
    """A kill while the kept rows are written leaves the old file, not half a new one."""
    _run_with_rounds(tmp_path, 3)
    before = progress_path(tmp_path).read_text()

    def killed(self, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        rewind(tmp_path, FIELDS, None)
    assert progress_path(tmp_path).read_text() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_classic_progress_with_the_old_iteration_column(tmp_path):
    """A classic run written before the shared ``round`` column reads, and rewinds into the
    new name."""
    write_run_spec(tmp_path, {"algo": "ppo"}, CLASSIC)
    progress_path(tmp_path).write_text("iteration,env_steps,wall_s\n1,512,1.5\n2,1024,3.0\n")
    assert read_progress(tmp_path) == [{"round": 1, "env_steps": 512, "wall_s": 1.5},
                                       {"round": 2, "env_steps": 1024, "wall_s": 3.0}]
    (tmp_path / "checkpoint").mkdir()
    rows = rewind(tmp_path, ("round", "env_steps", "wall_s"), lambda _: 1)
    assert rows == [{"round": 1, "env_steps": 512, "wall_s": 1.5}]
    assert progress_path(tmp_path).read_text().splitlines() == ["round,env_steps,wall_s",
                                                                 "1,512,1.5"]


def test_a_legacy_lm_directory_is_migrated_on_first_read(tmp_path):
    """``lm_run.json``, ``lm_progress.csv``, ``lm_checkpoint.pt``, ``lm_summary.json``: read
    through the run model under its own names, once renamed."""
    (tmp_path / "lm_run.json").write_text(json.dumps({"algo": "iif", "rounds": 2}))
    (tmp_path / "lm_progress.csv").write_text("round,reward_mean\n1,0.5\n2,0.25\n")
    (tmp_path / "lm_checkpoint.pt").write_bytes(b"state")
    (tmp_path / "lm_summary.json").write_text(json.dumps({"rounds": []}))
    assert run_kind(tmp_path) == LM
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "progress.csv", "run.json", "summary.json"]
    assert learner_state_path(tmp_path).read_bytes() == b"state"
    assert read_run_spec(tmp_path, LM) == {"algo": "iif", "rounds": 2, **_here(tmp_path)}
    assert [r["reward_mean"] for r in read_progress(tmp_path)] == [0.5, 0.25]
    assert read_summary(tmp_path) == {"rounds": []}


def test_a_legacy_migration_cut_short_is_finished_by_the_next_read(tmp_path):
    (tmp_path / "lm_run.json").write_text(json.dumps({"algo": "random"}))
    (tmp_path / "progress.csv").write_text("round\n1\n")  # renamed before the cut
    (tmp_path / "lm_summary.json").write_text("{}")
    assert read_run_spec(tmp_path, LM) == {"algo": "random", **_here(tmp_path)}
    assert not list(tmp_path.glob("lm_*")) and read_summary(tmp_path) == {}


def test_a_resumed_progress_file_keeps_the_columns_it_was_started_with(tmp_path):
    """A run started before a column existed goes on in its own schema: every row lines up
    with its header (the new column is left out), not shifted by one."""
    import csv

    from iif_ray.run import ProgressWriter

    old = ProgressWriter(tmp_path, ("round", "a", "b"))
    old.write({"round": 1, "a": 1.5, "b": 2.5})
    old.close()
    new = ProgressWriter(tmp_path, ("round", "a", "b", "c"), append=True)
    new.write({"round": 2, "a": 3.5, "b": 4.5, "c": 9.0})
    new.close()
    with (tmp_path / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows] == [["round", "a", "b"]] * 2
    assert rows[1] == {"round": "2", "a": "3.5", "b": "4.5"}
