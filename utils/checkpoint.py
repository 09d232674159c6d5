"""Checkpoints: atomic writes, safe loading, and a refusal to load weights into a different architecture.

A checkpoint is a plain dict of tensors, numbers and strings, so `torch.load(weights_only=True)` reads it
without unpickling arbitrary objects; a file that holds anything else is refused as "not a plain-tensor
checkpoint". It is written by utils.io.atomic_write (a temporary file in the same folder, fsynced, renamed
over the target): a crash (or SIGKILL) during a save leaves the previous file intact, and at worst a
temporary `.step-N.pt.tmp-PID.pt`, which `remove_orphans` deletes at the next start of the run.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.config import Config, architecture_mismatches, to_dict
from utils.errors import InputError
from utils.io import atomic_write
from utils.io import remove_orphans as remove_orphans  # ck.remove_orphans(run / "checkpoints") at a run's start

FORMAT = "spgnet-checkpoint-v1"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(InputError):
    """A checkpoint that cannot be used: damaged, foreign, or from an incompatible config."""


def save_checkpoint(path: str | Path, cfg: Config, models: dict[str, dict], step: int = 0, **state: Any) -> None:
    """Write a checkpoint atomically: the format tag, the resolved config, the networks' state dicts by name
    (spatn, generator, discriminator, flow, pose_encoder) and the step; `state` adds the rest (optimizers,
    schedulers, loop position, RNG states) for a resumable training checkpoint."""
    atomic_save({"format": FORMAT, "step": step, "config": to_dict(cfg), "models": models, **state}, path)


_GLOBAL = re.compile(r"GLOBAL (\S+)")  # torch names the refused class: "... unsupported GLOBAL posix.system ..."


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through utils.io.atomic_write (fsynced); an OSError naming `path` when it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: _torch_save(obj, f), fsync=True)


def _torch_save(obj: Any, f: Any) -> None:
    """torch.save, except that a failed write of the file (ENOSPC, EFBIG) comes out as that OSError: torch's zip
    writer reports it as a RuntimeError of its own ("unexpected pos ..."), with the OSError as its context."""
    try:
        torch.save(obj, f)
    except RuntimeError as err:
        if isinstance(err.__context__, OSError):
            raise err.__context__ from None
        raise


def pickled_objects_message(err: pickle.UnpicklingError, path: str | Path, kind: str, advice: str) -> str | None:
    """The message for torch.load(weights_only=True)'s refusal of a file that holds pickled Python objects, or
    None when `err` is another unpickling error. Torch's own message advises weights_only=False, i.e. running
    whatever the file says: it is never repeated."""
    found = _GLOBAL.search(str(err))
    if "weights only" not in str(err).lower() or found is None:
        return None  # not a refused object (random bytes also fail "weights only", with "Unsupported operand")
    return (f"{path} is not a plain-tensor {kind}: it holds pickled Python objects (it references {found.group(1)}), "
            f"which are refused because unpickling them can run arbitrary code. {advice}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; a truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = pickled_objects_message(
            err, path, "checkpoint", "SPGNet checkpoints hold only tensors, numbers and strings; use a checkpoint "
            "written by this project's train.py.")
        if refused is None:
            raise CheckpointError(f"checkpoint {path} is damaged (truncated or corrupt) and cannot be read: "
                                  f"{type(err).__name__}") from err
        raise CheckpointError(refused) from None
    except Exception as err:  # torch raises RuntimeError/EOFError depending on the damage
        raise CheckpointError(
            f"checkpoint {path} is damaged (truncated or corrupt) and cannot be read: {err}. "
            f"Earlier checkpoints of the run, if any, are in {path.parent}."
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an SPGNet checkpoint (format {FORMAT!r} expected)")
    problem = malformed(ckpt)
    if problem:
        raise CheckpointError(f"{path} is a malformed SPGNet checkpoint: {problem}; use a checkpoint written by "
                              "train.py or scripts/import_release.py")
    return ckpt


def malformed(ckpt: dict) -> str | None:
    """What is wrong with the entries every reader of a checkpoint relies on, or None: 'config' a mapping of
    sections, 'models' a mapping of state dicts (names to tensors), 'step' an integer."""
    config, models, step = ckpt.get("config"), ckpt.get("models"), ckpt.get("step")
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        return f"its 'config' is {type(config).__name__}, not a mapping of config sections"
    if not isinstance(models, dict) or not models:
        found = type(models).__name__ if models is not None else "missing"
        return f"its 'models' is {found}, not a mapping of networks"
    for name, state in models.items():
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            return f"its network {name!r} is not a state dict (parameter names to tensors)"
    if not isinstance(step, int) or isinstance(step, bool):
        return f"its 'step' is {step!r}, not an integer"
    return None


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, name: str) -> None:
    """module.load_state_dict(state), or a CheckpointError naming the checkpoint, the network and what does not fit
    (missing or unexpected keys, the first shapes that differ) instead of torch's multi-line RuntimeError: e.g. a
    checkpoint whose saved config was edited to other widths than its weights have."""
    own = module.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else ""]
        raise CheckpointError(f"{path}: the {name} weights do not fit the network its config builds: "
                              f"{'; '.join(p for p in parts if p)} (was the config edited, or the checkpoint "
                              "written by an older version of this code?)")
    module.load_state_dict(state)


def check_compatible(ckpt: dict, cfg: Config, path: str | Path) -> None:
    """Refuse a checkpoint whose network-shaping config keys differ from `cfg`, naming every such key."""
    mismatches = architecture_mismatches(ckpt["config"], cfg)
    if mismatches:
        lines = "\n  ".join(mismatches)
        raise CheckpointError(
            f"checkpoint {path} was trained with a different architecture config; mismatching keys "
            f"(checkpoint -> current):\n  {lines}"
        )


def step_checkpoints(folder: str | Path) -> list[Path]:
    """`step-NNNNNNNN.pt` files of a run, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.pt"


def prune(folder: str | Path, keep: int, protect: str | Path | None = None) -> None:
    """Delete all but the newest `keep` step checkpoints (keep <= 0: delete none), never `protect` (the newest
    checkpoint known to hold finite weights, which may be older than the kept ones)."""
    protected = Path(protect).resolve() if protect is not None else None
    for old in step_checkpoints(folder)[:-keep] if keep > 0 else []:
        if protected is None or old.resolve() != protected:
            old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ random number generators


def rng_state() -> dict[str, Any]:
    """This process's RNGs, in weights_only-loadable form (tensors and numbers only): torch's, numpy's, Python's
    and, with CUDA, the generator of the current device, the one this process draws on. Under DDP every rank
    saves its own (training.loop.gather_rng_states); a host with another GPU count restores it all the same."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global legacy RNG is what libraries use)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state saved. A CUDA state is set on the current device; a list of them (one per visible
    device, as earlier versions saved) gives the current device's entry, or none on a host with fewer devices."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(  # noqa: NPY002
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
         state["numpy_has_gauss"], state["numpy_gauss"])
    )
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, list):
        device = torch.cuda.current_device()
        if device >= len(cuda):
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(cuda)
