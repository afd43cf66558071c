"""The language-model path: sequence records, LoRA policies, a Ray runtime shaped like veRL's.

RLlib has no language-model path, so this one runs on Ray Core directly (as veRL and OpenRLHF
do). :mod:`.models` builds or loads policies and tokenizers (local paths only); the influence
scores themselves live in :mod:`iif_ray.attribution.sequence`.
"""

LM_ALGOS = ("ppo", "iif", "random")  # the random control drops as many rows as IIF would
