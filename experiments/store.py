"""Run directories: the run id, atomic writes, checkpoints and ``result.json``.

A run is identified by a hash of what determines its trained weights — data, model, optimizer,
hyperparameters, schedule, seed, stopping rule — and never by what is measured on them (metrics,
surfaces, transforms: records inside the run directory, see :mod:`experiments.measure`) nor by paths,
device, launcher or progress settings (DESIGN.md, "Runs are identified by what determines them"). Every file is written to a
temporary file in the same directory and renamed, so a kill never leaves half a file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from experiments.errors import ConfigError
from flatness.io import atomic_write_bytes

if TYPE_CHECKING:  # pandas is imported by the analysis that writes tables, not by every run
    import pandas as pd

log = logging.getLogger(__name__)

# Top-level keys that change where or how fast a run happens, not what it computes.
NON_DETERMINING_KEYS = frozenset(
    {
        "name",
        "device",
        "progress",
        "data_dir",
        "runs_dir",
        "force",
        "eval_batch_size",
        "save_epochs",
        "checkpoint_every",
        "checkpoint_seconds",
        "eval_every",
        # where training begins, not what it computes: a run taken up from a higher criterion
        # (experiments.continuation) is bit-identical to training from scratch
        "start_from",
        "threads",
        "hydra",
        # measured on the trained weights, not determining them (issue: runs cheap to extend)
        "metrics",
        "surface",
        "transform",
        "track_sharpness_every",
        "track_sharpness_samples",
    }
)
# Keys inside config groups that only say where files come from.
NON_DETERMINING_GROUP_KEYS = {"dataset": frozenset({"download"})}
# Keys added after runs existed, at the value that reproduces what runs did before them: left out of
# the hash at that value, so that those runs keep their ids (and anything else changes the id).
ADDED_AT_DEFAULT = {("model", "dropout"): 0.0}


def determining_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines the result. ``init_from`` (weights a run starts
    from) enters as the digest of that file's bytes, not its path, and is left out when null, so
    that runs made before the key existed keep their ids."""
    out = {}
    for key, value in cfg.items():
        if key in NON_DETERMINING_KEYS:
            continue
        if key == "init_from":
            if value is None:
                continue
            value = weights_digest(value)
        drop = NON_DETERMINING_GROUP_KEYS.get(key, frozenset())
        if isinstance(value, Mapping) and drop:
            value = {k: v for k, v in value.items() if k not in drop}
        if isinstance(value, Mapping):
            value = {
                k: v
                for k, v in value.items()
                if (key, k) not in ADDED_AT_DEFAULT or v != ADDED_AT_DEFAULT[key, k]
            }
        out[key] = value
    return out


def determining_key(flat_key: str) -> bool:
    """Whether a key of a flattened config (``"optimizer.lr"``, ``"dataset.download"``; see
    :func:`flatten_config`) is one :func:`determining_config` keeps: the same rule on flat keys."""
    top, _, rest = flat_key.partition(".")
    return top not in NON_DETERMINING_KEYS and rest not in NON_DETERMINING_GROUP_KEYS.get(top, ())


def weights_digest(path: str | os.PathLike) -> str:
    """sha256 of a weights file's bytes: what identifies the weights a continuation starts from."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"init_from: cannot read {path} ({exc.strerror or exc})") from None


def digest(value: Any, length: int, *, sort_keys: bool = True) -> str:
    """The suite's one content hash: the first ``length`` hex digits of sha256 over ``value`` as
    JSON (keys sorted unless ``sort_keys=False``, which the tuning stamps were made with; anything
    JSON cannot write enters as its ``str``). Run ids, tuning stamps, measurement-settings keys and
    the dataset cache's file names all come from it, so none can drift from another."""
    text = json.dumps(value, sort_keys=sort_keys, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_id(cfg: Mapping[str, Any]) -> str:
    """A short, stable hash of the result-determining config."""
    return digest(determining_config(cfg), 12)


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}}`` → ``{"optimizer.lr": 0.1}`` (lists are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


# --- atomic writes -------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return str(obj)


# --- reading back --------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A checkpoint saved by :func:`atomic_torch_save`, or None (with a warning) if it is unreadable
    or does not hold what it should: a dict with every one of ``keys``. A damaged file is then
    treated as missing (the run starts over or retrains) instead of failing every rerun.

    ``weights_only=True``: loading never executes pickled code.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning("checkpoint %s is unreadable (%s); ignoring it", path, exc)
        return None
    missing = [k for k in keys if k not in loaded] if isinstance(loaded, dict) else list(keys)
    if not isinstance(loaded, dict) or missing:
        what = f"lacks {missing}" if isinstance(loaded, dict) else f"is a {type(loaded).__name__}"
        log.warning("checkpoint %s %s, not a checkpoint of this project; ignoring it", path, what)
        return None
    return loaded


def same_weights(state: Any, like: Mapping[str, torch.Tensor] | None) -> bool:
    """Whether ``state`` is a state dict of tensors with exactly ``like``'s names and shapes (any
    state dict of tensors when ``like`` is None)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return False
    return like is None or (
        set(state) == set(like) and all(state[k].shape == like[k].shape for k in like)
    )


def load_weights(path: str | os.PathLike, like: Mapping[str, torch.Tensor]) -> dict | None:
    """Weights saved as a state dict (``final.pt``), or None (with a warning) unless the file holds
    tensors of exactly ``like``'s names and shapes: a truncated, replaced or foreign file counts as
    missing."""
    state = load_checkpoint(path)
    if state is None:
        return None
    if not same_weights(state, like):
        log.warning(
            "%s does not hold this run's weights (names or shapes differ); ignoring it", path
        )
        return None
    return state


# What makes a directory a run directory (any one of them: a damaged run still shows).
RUN_FILES = ("config.yaml", "result.json", "final.pt", "checkpoint.pt", "init.pt")


def run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every run directory under ``root``: one holding any of :data:`RUN_FILES`, outside Hydra's
    ``.multirun`` folders, so that a run whose config.yaml was deleted is still found."""
    found = {
        f.parent
        for f in Path(root).rglob("*")  # one walk of the tree, not one per file name
        if f.name in RUN_FILES
        and ".multirun" not in f.parts
        and f.parent.name not in ("weights", "measurements")
    }
    return sorted(found)


def load_result(path: str | os.PathLike) -> dict[str, Any] | None:
    """``result.json`` as a dict, or None (with a warning) if missing or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("result file %s is unreadable (%s); ignoring it", path, exc)
        return None
    if not isinstance(result, dict):
        log.warning(
            "result file %s holds a %s, not a result; ignoring it", path, type(result).__name__
        )
        return None
    return result


def write_table(df: pd.DataFrame, out: Path, name: str) -> None:
    """``<name>.csv`` and ``<name>.md`` in ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())
    text = df.to_markdown(index=False, floatfmt=".4g") if len(df) else "(no rows)"
    atomic_write_bytes(out / f"{name}.md", (text + "\n").encode())
