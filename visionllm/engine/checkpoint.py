"""Checkpoints that survive a crash and resume exactly.

mmengine's ``CheckpointHook`` writes with a plain ``open(path, 'wb')`` (a kill mid-save leaves a truncated
file under the checkpoint's name), deletes the oldest checkpoint *before* writing the new one (with
``max_keep_ckpts=1`` a kill mid-save leaves none), and on resume only re-seeds the RNGs (a resumed run
samples other instructions and augmentations than the uninterrupted one). :class:`ResumableCheckpointHook`
fixes the three; ``configs/_base_/default_runtime.py`` uses it.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from torch import nn

from visionllm.engine.hooks import unwrap_model
from visionllm.engine.workdir_lock import pid_alive
from visionllm.fileio import PARTIAL_SUFFIX, atomic_write, partial_writer
from visionllm.registry import HOOKS

#: ``backend_args`` that select :class:`AtomicLocalBackend`.
ATOMIC_BACKEND_ARGS = {"backend": "atomic_local"}


@register_backend("atomic_local")
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (:func:`atomic_write`)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        atomic_write(obj.encode(encoding), filepath)


def remove_orphan_partials(directory: str | Path) -> None:
    """Delete the unfinished atomic-write files in ``directory`` whose writer has ended: those of a run
    killed mid-save. A file whose writer pid is alive on this host is another process's save in progress
    and is kept; this process's own pid counts as ended (it writes nothing yet, and a container restarted
    may reuse the pid of the one that crashed)."""
    for partial in Path(directory).glob(f".*{PARTIAL_SUFFIX}"):
        pid = partial_writer(partial)
        if pid is not None and (pid == os.getpid() or not pid_alive(pid)):
            partial.unlink(missing_ok=True)


#: ``meta`` key of a checkpoint listing the state-dict keys it left out (:func:`omit_pretrained_frozen`).
OMITTED_KEYS = "omitted_pretrained_keys"


def pretrained_frozen_keys(model: nn.Module) -> set[str]:
    """The keys of ``model``'s state dict that building it loads again from pretrained files and that
    training never changes: each component with a ``pretrained_frozen_keys`` method names its own (the
    LLM's base weights under LoRA, a frozen pretrained text encoder)."""
    keys = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "pretrained_frozen_keys"):
            keys.update(f"{prefix}.{key}" if prefix else key for key in module.pretrained_frozen_keys())
    return keys


def omit_pretrained_frozen(model: nn.Module, checkpoint: dict) -> None:
    """Drop ``model``'s frozen pretrained weights from a checkpoint about to be saved and list them in
    its ``meta``: a LoRA fine-tune of a 7B LLM then saves megabytes, not the 14 GB base model."""
    state = checkpoint["state_dict"]
    omitted = sorted(pretrained_frozen_keys(model) & state.keys())
    for key in omitted:
        del state[key]
    checkpoint.setdefault("meta", {})[OMITTED_KEYS] = omitted


def restore_pretrained_frozen(model: nn.Module, checkpoint: dict) -> None:
    """Put the weights a loaded checkpoint left out back into it, from ``model`` as just built (which
    loaded them from its pretrained files), so the checkpoint loads strictly. Raises KeyError when the
    model does not rebuild one of them: it was then built from another config than the one trained."""
    omitted = checkpoint.get("meta", {}).get(OMITTED_KEYS, [])
    if not omitted:
        return
    unknown = sorted(set(omitted) - pretrained_frozen_keys(model))
    if unknown:
        raise KeyError(
            f"the checkpoint leaves out {len(unknown)} frozen pretrained weights (e.g. '{unknown[0]}') that "
            "this model does not load from pretrained files: build it from the config it was trained with"
        )
    state = model.state_dict()
    checkpoint["state_dict"].update({key: state[key] for key in omitted})


def random_state() -> dict[str, Any]:
    """This process's RNG states: torch (and CUDA when present), numpy's global and Python's ``random``."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _RestoreAfterSkip:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` on resume until the loop has skipped the
    batches trained before the checkpoint, then restores the saved RNG state and steps aside.

    mmengine skips those batches by loading them again; with ``num_workers=0`` that runs the random
    transforms in this process, so the state is restored after the skip: batch ``iter`` onwards then
    sees exactly the RNG state the uninterrupted run saw.
    """

    def __init__(self, loop, skip: int, state: dict[str, Any]) -> None:
        self._loop, self._iterator, self._skip, self._state = loop, loop.dataloader_iterator, skip, state

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self._skip == 0:
            set_random_state(self._state)
            self._loop.dataloader_iterator = self._iterator
        else:
            self._skip -= 1
        return next(self._iterator)


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) made safe to crash in and exact to resume from.

    - Writes through :class:`AtomicLocalBackend` unless ``backend_args`` names another backend: a run
      killed mid-save keeps its previous checkpoints and ``last_checkpoint`` pointer intact, and the
      unfinished ``.partial`` file is removed when training starts again (only once its writer has
      ended: :func:`remove_orphan_partials`).
    - Deletes checkpoints beyond ``max_keep_ckpts`` after the new one is written, not before.
    - With ``save_pretrained_frozen=False``, leaves the model's frozen pretrained weights out of its
      checkpoints (:func:`omit_pretrained_frozen`); loading puts them back from the freshly built model
      (:func:`restore_pretrained_frozen`), for checkpoints saved either way.
    - Stores every rank's RNG states (:func:`random_state`) in ``meta['rng_states']`` and restores this
      rank's on ``--resume``; validation runs on a saved and restored RNG state, so evaluating (its data
      loader draws a seed) does not shift the training's random stream.
    """

    def __init__(
        self,
        *args,
        max_keep_ckpts: int = -1,
        backend_args: dict | None = None,
        save_pretrained_frozen: bool = True,
        **kwargs,
    ) -> None:
        # mmengine prunes down to max_keep_ckpts - 1 before saving; one spare slot turns that off, and
        # ``_prune`` trims to max_keep_ckpts once the new checkpoint is on disk
        spare = max_keep_ckpts + 1 if max_keep_ckpts > 0 else max_keep_ckpts
        super().__init__(
            *args, max_keep_ckpts=spare, backend_args=backend_args or dict(ATOMIC_BACKEND_ARGS), **kwargs
        )
        self.keep_ckpts = max_keep_ckpts
        self.save_pretrained_frozen = save_pretrained_frozen
        self._loaded: tuple[int, list[dict[str, Any]]] | None = None
        self._val_state: dict[str, Any] | None = None

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and self.backend_args == ATOMIC_BACKEND_ARGS:
            remove_orphan_partials(self.out_dir)
        self._prune(runner)
        self._restore_random_state(runner)

    # overrides a private mmengine method (listed in visionllm/mmengine_private.py)
    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        # every rank calls this (only rank 0 writes): gather all ranks' RNG states into the checkpoint.
        # mmengine saves the last checkpoint again after validation when the best score improves; the
        # state training goes on from is then the one saved before validation, not the live one
        state = self._val_state if self._val_state is not None else random_state()
        meta = {**meta, "rng_states": all_gather_object(state)}
        super()._save_checkpoint_with_step(runner, step, meta)
        self._prune(runner)

    def _prune(self, runner) -> None:
        if self.keep_ckpts <= 0:
            return
        while len(self.keep_ckpt_ids) > self.keep_ckpts:
            step = self.keep_ckpt_ids.popleft()
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
            if not is_main_process():
                continue
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # DeepSpeed checkpoints are directories
                self.file_backend.rmtree(path)
        runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.save_pretrained_frozen:
            omit_pretrained_frozen(unwrap_model(runner.model), checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        restore_pretrained_frozen(unwrap_model(runner.model), checkpoint)
        meta = checkpoint.get("meta", {})
        self._loaded = (meta.get("iter"), meta.get("rng_states"))

    def _restore_random_state(self, runner) -> None:
        """On resume (the loop stands at the checkpoint's iteration), put this rank's RNG state back."""
        if self._loaded is None:
            return
        iteration, states = self._loaded
        self._loaded = None
        if runner.iter == 0 or runner.iter != iteration:  # loaded weights (load_from), not a resume
            return
        rank, world_size = get_dist_info()
        if not states or len(states) != world_size:
            print_log(
                f"the checkpoint holds RNG states for {len(states or [])} ranks, this run has {world_size}: "
                "the resumed run keeps its fresh seed, so its draws differ from an uninterrupted run's",
                logger="current",
                level=logging.WARNING,
            )
            return
        loop = runner.train_loop
        if getattr(loop, "dataloader_iterator", None) is not None:
            loop.dataloader_iterator = _RestoreAfterSkip(loop, runner.iter, states[rank])
        else:  # epoch-based loops resume at an epoch boundary, without skipping batches
            set_random_state(states[rank])

    def before_val(self, runner) -> None:
        self._val_state = random_state()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            set_random_state(self._val_state)
            self._val_state = None
