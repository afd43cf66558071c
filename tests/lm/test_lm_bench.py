"""``iif-ray bench lm`` prints scoring and update seconds and their ratios (tiny sizes)."""

from __future__ import annotations

import re

from iif_ray.experiments.lm_speed import bench_lm


def test_bench_lm_prints_ratios_side_by_side():
    lines: list[str] = []
    ratios = bench_lm(sequences=8, minibatches=(1, 4), epochs=1, methods=("ghost",), reps=1,
                      echo=lines.append)
    assert set(ratios) == {"ghost/mb1", "ghost/mb4"} and all(r > 0 for r in ratios.values())
    text = "\n".join(lines)
    assert re.search(r"update \(minibatch 1\): [\d.]+ s per round \(8 steps\)", text)
    assert "scoring/update lm ghost minibatch 4:" in text


def test_bench_lm_gives_the_thread_count_back():
    import torch

    before = torch.get_num_threads()
    bench_lm(sequences=4, minibatches=(4,), epochs=1, methods=("ghost",), reps=1,
             echo=lambda _: None)
    assert torch.get_num_threads() == before
