"""Simulated crossed grids shared by the solver and bootstrap tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

RANDOM = ["target_task", "target_language", "mix"]


def simulate_grid(rng: np.random.Generator, *, n_mixes=12, n_targets=4, n_languages=8,
                  n_seeds=3, diversity_effect=1.0, volume_effect=0.5, sd_target=2.0,
                  sd_language=1.0, sd_mix=0.7, sd_residual=1.0, missing_cells=0.0,
                  unequal_seeds=False) -> pd.DataFrame:
    """A diversity-by-volume grid with crossed random intercepts (one row per run and language).

    Mixes cross 1-4 tasks with 2^k examples (diversity = log2 tasks, volume = log2 examples,
    both centred); improvement = effects + target + language-within-target + mix + residual.
    ``missing_cells`` drops that share of (mix, target) cells; ``unequal_seeds`` gives each cell
    between 1 and ``n_seeds`` seeds.
    """
    n_tasks = np.tile([1, 2, 4, 8], n_mixes // 4 + 1)[:n_mixes]
    examples = 1000 * 2 ** np.repeat(np.arange(n_mixes // 4 + 1), 4)[:n_mixes]
    rng.shuffle(examples)
    diversity = np.log2(n_tasks) - np.log2(n_tasks).mean()
    volume = np.log2(examples) - np.log2(examples).mean()
    u_mix = rng.normal(0, sd_mix, n_mixes)
    u_target = rng.normal(0, sd_target, n_targets)
    u_language = rng.normal(0, sd_language, (n_targets, n_languages))
    rows = []
    for m in range(n_mixes):
        for t in range(n_targets):
            if rng.random() < missing_cells:
                continue
            seeds = rng.integers(1, n_seeds + 1) if unequal_seeds else n_seeds
            for s in range(seeds):
                for lang in range(n_languages):
                    mean = (diversity_effect * diversity[m] + volume_effect * volume[m]
                            + u_target[t] + u_language[t, lang] + u_mix[m])
                    rows.append((f"m{m:02d}", f"t{t}", f"l{lang:02d}", f"t{t}:l{lang:02d}", s,
                                 diversity[m], volume[m], mean))
    frame = pd.DataFrame(rows, columns=["mix", "target_task", "language", "target_language",
                                        "seed", "diversity", "volume", "mean"])
    frame["improvement"] = frame.pop("mean") + rng.normal(0, sd_residual, len(frame))
    return frame
