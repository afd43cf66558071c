"""``report.md``: the sections of the report, assembled in their order, from a results
directory's committed files alone.

Evidence (``evals.csv``, :mod:`~iif_ray.reporting.evidence`) comes first, then the in-training
tables of environments without evaluated snapshots (:mod:`~iif_ray.reporting.classic`), an LM
sweep's held-out evaluation (:mod:`~iif_ray.reporting.lm`), and the Stable-Baselines3 check.
Nothing here imports Ray or an engine: regenerating a report needs pandas, matplotlib and
rliable only.
"""

from __future__ import annotations

from pathlib import Path

from iif_ray.reporting import stats as st
from iif_ray.reporting.classic import (
    FINAL_ROUNDS,
    bench_section,
    classic_sections,
    sb3_section,
)
from iif_ray.reporting.evidence import EVIDENCE_INTRO, evidence_sections
from iif_ray.reporting.lm import lm_sections
from iif_ray.reporting.rounds import load_rounds


def write_report(directory: str | Path) -> Path:
    """Write ``report.md`` and ``curves_<env>.png`` into ``directory`` from its rounds CSVs."""
    with st.memoised():
        return _write_report(Path(directory))


def _write_report(directory: Path) -> Path:
    df = load_rounds(directory)
    evidence, evaluated = evidence_sections(directory)
    parts = [
        "# IIF vs PPO: sample efficiency and wall-clock",
        "",
        "Regenerate with `iif-ray report " + str(directory) + "` from the committed "
        "`*rounds*.csv` (and `evals.csv`, and an LM sweep's `lm/*/progress.csv`) files. "
        "Metric definitions: "
        "`iif_ray/reporting/metrics.py`. In tables of in-training evaluations (no "
        "`evals.csv` rows), intervals are rliable's 95% bootstrap of the mean over seeds "
        "(paired by seed index; over 3-5 seeds a bootstrap covers less than it claims, so "
        "read them as a spread, not a test) "
        "and the final return is the mean "
        f"evaluation return of the last {FINAL_ROUNDS} rounds. Paper figures: Hu et al. 2025, "
        f"Fig. 6(b), 5 seeds. Every interval: rliable, {st.REPS:,} bootstrap repetitions; "
        "an interval end's Monte-Carlo error (its standard deviation over bootstrap seeds) is "
        f"{st.MC_END_ERROR[0]:.1%} of the interval's width (median; 95th percentile "
        f"{st.MC_END_ERROR[1]:.1%}), so a last digit can move when the report is regenerated "
        "with other repetitions.",
        "",
    ]
    if evidence:
        parts += [EVIDENCE_INTRO, "", *evidence]
    parts += classic_sections(df, directory, sorted(set(df.env) - evaluated))
    parts += lm_sections(directory)
    parts.append(sb3_section(df))
    parts.append(bench_section(directory))
    path = directory / "report.md"
    path.write_text("\n".join(parts))
    return path
