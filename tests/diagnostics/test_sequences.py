"""``iif-ray diagnose`` on an LM run: per-round figures against hand-computed ones, the
extremes in score order, and clear refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iif_ray.cli import main
from iif_ray.diagnostics import sequences
from iif_ray.ledger import SEQUENCE_LEDGER_SCHEMA, LedgerWriter, ledger_columns
from iif_ray.lm.spec import LMRunSpec
from iif_ray.run import LM, ledger_dir, write_run_spec

CLEAN = "a good kind and happy answer"
TOXIC = "you stupid idiot I hate you"


def _run(tmp_path, scores_by_round: list[np.ndarray], algo: str = "iif"):
    """An LM run directory: its spec and a ledger of 8 sequences per round; the first half
    of each round's responses are toxic with reward -1, the rest clean with reward +1."""
    run = tmp_path / "run"
    write_run_spec(run, LMRunSpec(model="m", out_dir=str(run), algo=algo).to_dict(), LM)
    writer = LedgerWriter(str(ledger_dir(run)))
    for k, scores in enumerate(scores_by_round, start=1):
        n = len(scores)
        toxic = np.arange(n) < n // 2
        cols = ledger_columns(
            iteration=k, env_steps=k * n, learner=0, schema=SEQUENCE_LEDGER_SCHEMA,
            group=np.arange(n) // 2, prompt=np.array([f"prompt {i // 2}" for i in range(n)]),
            response=np.where(toxic, TOXIC, CLEAN), response_tokens=np.full(n, 6),
            reward=np.where(toxic, -1.0, 1.0), advantage=np.where(toxic, -0.5, 0.5),
            logp=np.zeros(n), score=scores, kept=~np.isfinite(scores) | (scores >= 0),
            corrupted=np.zeros(n, dtype=bool))
        writer.write(k, 0, cols)
    return run


def test_round_figures_and_extremes(tmp_path):
    # Round 1: the toxic half scores negative (dropped). Round 2: the reverse.
    r1 = np.array([-4.0, -3, -2, -1, 1, 2, 3, 4])
    run = _run(tmp_path, [r1, -r1])
    assert main(["diagnose", str(run)]) == 0
    out = run / "diagnostics"
    table = pd.read_parquet(out / sequences.ROUNDS_FILE)
    assert table["round"].tolist() == [1, 2]
    assert table.share_negative.tolist() == [0.5, 0.5]
    assert table.spearman_score_reward.tolist() == pytest.approx([np.corrcoef(
        pd.Series(r1).rank(), [-1, -1, -1, -1, 1, 1, 1, 1])[0, 1], -np.corrcoef(
        pd.Series(r1).rank(), [-1, -1, -1, -1, 1, 1, 1, 1])[0, 1]])
    assert table.reward_kept.tolist() == [1.0, -1.0]
    assert table.reward_dropped.tolist() == [-1.0, 1.0]
    # The evaluation detector flags the toxic responses, and only them.
    assert table.toxic_kept.tolist() == [0.0, 1.0] and table.toxic_dropped.tolist() == [1, 0]
    ext = pd.read_parquet(out / sequences.EXTREMES_FILE)
    first = ext[ext.iteration == 1]
    # Lowest first; 8 records give 4 at each end, never one record at both.
    assert first[first.end == "most harmful"].score.tolist() == [-4, -3, -2, -1]
    assert first[first.end == "most helpful"].score.tolist() == [4, 3, 2, 1]
    index = (out / "index.md").read_text()
    assert "2 rounds, 16 sequences (8 dropped)" in index
    assert "toxic share kept / dropped (evaluation detector): **0.500** / **0.500**" in index
    assert (out / sequences.PLOT_FILE).stat().st_size > 0


def test_refusals(tmp_path, capsys):
    run = _run(tmp_path, [np.full(4, np.nan)], algo="ppo")
    assert main(["diagnose", str(run)]) == 2
    assert "has no influence scores (trained with --algo ppo)" in capsys.readouterr().err
    assert main(["diagnose", str(run), "--intervene", "1"]) == 2
    assert "use iif-ray lm-checks" in capsys.readouterr().err
