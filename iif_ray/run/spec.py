"""``run.json``: the run spec inside an envelope that says which engine's run it is.

The file is the engine's spec (its own ``to_dict``) plus one key, ``kind``: ``"classic"``
(the RLlib engine, ``iif-ray train``) or ``"lm"`` (the language-model engine, ``iif-ray
train-lm``). Readers of a run directory tell the two apart by it and nothing else. A
``run.json`` without ``kind`` was written by the classic engine before kinds were recorded
(the LM engine then wrote ``lm_run.json``, see :mod:`iif_ray.run.legacy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iif_ray.atomic_files import write_json_atomically
from iif_ray.run.layout import RUN_SPEC
from iif_ray.run.legacy import LM_KIND, migrate_legacy_lm

# Never stored: a run directory is wherever its run.json lies, so a copied or moved run
# resumes in its new place and never writes into the old one.
OUT_DIR_KEY = "out_dir"
CLASSIC = "classic"
LM = LM_KIND
KINDS = (CLASSIC, LM)
KIND_KEY = "kind"
# What each kind is called in messages, and the command that writes it.
_LABELS = {CLASSIC: ("run", "iif-ray train"), LM: ("LM run", "iif-ray train-lm")}


class RunKindError(ValueError):
    """A run directory holds the other engine's run."""


def write_run_spec(run_dir: str | Path, spec: dict[str, Any], kind: str) -> Path:
    """Write ``run.json`` (what was asked for, and its kind) atomically, before round 1.

    Raises:
        ValueError: an unknown ``kind``, or a spec that already names one.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; accepted: {list(KINDS)}")
    if KIND_KEY in spec:
        raise ValueError(f"a run spec must not hold the envelope's {KIND_KEY!r} key")
    migrate_legacy_lm(run_dir)
    spec = {k: v for k, v in spec.items() if k != OUT_DIR_KEY}
    return write_json_atomically(Path(run_dir) / RUN_SPEC, {KIND_KEY: kind, **spec})


def run_kind(run_dir: str | Path) -> str | None:
    """``"classic"`` or ``"lm"``; ``None`` where ``run_dir`` holds no run."""
    migrate_legacy_lm(run_dir)
    path = Path(run_dir) / RUN_SPEC
    if not path.is_file():
        return None
    return _read(path).get(KIND_KEY, CLASSIC)


def _read(path: Path) -> dict[str, Any]:
    """``run.json`` as a dict; a file cut short (a copy or a disk that filled) is named.

    Raises:
        ValueError: the file is not a JSON object.
    """
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a run spec (truncated or not JSON: {e}); "
                         f"accepted: the {RUN_SPEC} an iif-ray train or train-lm run "
                         "wrote") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{str(path)!r} is not a run spec (a JSON {type(spec).__name__}, "
                         f"not an object); accepted: the {RUN_SPEC} an iif-ray train or "
                         "train-lm run wrote")
    return spec


def read_run_spec(run_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The spec (envelope removed) an interrupted or finished run was started with, its
    ``out_dir`` the directory it lies in now (a value stored by an older version is ignored).

    Args:
        run_dir: the run directory.
        kind: the kind the caller can continue; ``None`` accepts either.

    Raises:
        FileNotFoundError: the directory holds no run.
        RunKindError: it holds a run of the other kind.
        ValueError: its run.json is not a JSON object (cut short, say).
    """
    migrate_legacy_lm(run_dir)
    path = Path(run_dir) / RUN_SPEC
    label, command = _LABELS.get(kind, _LABELS[CLASSIC])
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no {label} (no {RUN_SPEC}); "
                                f"accepted: the --out directory of an {command} run")
    spec = _read(path)
    found = spec.pop(KIND_KEY, CLASSIC)
    spec[OUT_DIR_KEY] = str(Path(run_dir).resolve())  # where it is now, not where it was
    if kind is not None and found != kind:
        raise RunKindError(f"{str(run_dir)!r} holds a run of {_LABELS[found][1]}, not of "
                           f"{command}; accepted: the --out directory of an {command} run")
    return spec
