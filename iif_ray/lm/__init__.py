"""The language-model engine: sequence records, LoRA policies, a Ray driver shaped like veRL's.

RLlib has no language-model path, so this one runs on Ray Core directly (as veRL and OpenRLHF
do), split by role as veRL splits its trainer: :mod:`.spec` (the run spec), :mod:`.workers`
(rollout, reward and learner actor bodies), :mod:`.scorers` (who scores a round),
:mod:`.advantages` (the estimators, veRL's ``core_algos``) and :mod:`.trainer` (``fit``,
which only orchestrates). The run directory is the run model's (:mod:`iif_ray.run`).
:mod:`.models` builds or loads policies and tokenizers (local paths only); the influence
scores themselves live in :mod:`iif_ray.attribution.sequence`.
"""

# The random control drops as many rows as IIF would; group-filter is DAPO's dynamic sampling
# (drop prompt groups whose rewards do not vary), group-filter+iif that, then IIF on the rest.
LM_ALGOS = ("ppo", "iif", "random", "group-filter", "group-filter+iif")
GROUP_FILTER_ALGOS = ("group-filter", "group-filter+iif")
INFLUENCE_ALGOS = ("iif", "random", "group-filter+iif")  # the algos that score records
LM_TASKS = ("detox", "arith")  # iif_ray.lm.tasks: detox-mini, digit addition
