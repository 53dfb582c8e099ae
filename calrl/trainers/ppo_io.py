"""Saving and restoring :class:`~calrl.trainers.ppo.CalibratedPPOTrainer` (:class:`PPOCheckpointingMixin`; the
layout is in :mod:`ppo_checkpoint`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import TrainerState

from calrl.errors import InputError
from calrl.generation.sharding import fsdp_sharded, reshard
from calrl.trainers import ppo_checkpoint as ckpt
from calrl.trainers.ppo_compile import named_module
from calrl.trainers.ppo_deepspeed import load_engine, save_engine, uses_deepspeed

ADAPTER_FILE = "adapter_model.safetensors"


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-N`` with the largest N (interrupted saves are skipped)."""
    found = ckpt.complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(value: Any, output_dir: str) -> str | None:
    """``None``/``False``: no resume; ``True``/``"latest"``: the newest complete checkpoint; else a folder."""
    if value in (None, False, ""):
        return None
    if value is True or str(value) == "latest":
        found = newest_complete_checkpoint(output_dir)
        if found is None:
            raise InputError("resume 'latest': no complete checkpoint-* folder", path=str(output_dir))
        return str(found)
    return str(value)


def _split_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class PPOCheckpointingMixin:
    """Checkpoints of :class:`~calrl.trainers.ppo.CalibratedPPOTrainer`: the policy in Hugging Face format
    (:meth:`_save_policy`), a staged ``checkpoint-<step>`` (:meth:`_write_checkpoint`, then
    :meth:`_finish_checkpoint` after ``on_save``) and the two-phase restore (:meth:`_load_checkpoint`).

    Expects on ``self`` (what ``CalibratedPPOTrainer`` provides): ``accelerator``, ``args`` (``output_dir``,
    ``save_total_limit``, ``model_adapter_name``), ``model`` (the policy-and-value wrapper, prepared),
    ``optimizer``, ``lr_scheduler``, ``state`` (a ``TrainerState`` with ``episode``), ``processing_class``,
    ``is_peft_model``, ``kl_controller`` and ``reward_pipeline`` (``state_dict``/``load_state_dict``),
    ``log_window`` and ``last_saved_step``.
    """

    def _save_policy(self, folder: Path) -> None:
        """Save the policy (or its adapter) and the tokenizer into ``folder`` (full state gathered from shards)."""
        self._write_policy(folder, self._trained_state())

    def _trained_state(self) -> dict[str, torch.Tensor] | None:
        """The trained module's full state dict, keyed as the policy-and-value wrapper's (collective: FSDP, ZeRO-3)."""
        return self.accelerator.get_state_dict(named_module(self.model, self.accelerator))

    def _write_policy(self, folder: Path, state: dict[str, torch.Tensor] | None) -> None:
        """The main process writes the gathered ``state`` (under ZeRO-3 the other processes get ``None``)."""
        acc = self.accelerator
        if not acc.is_main_process:
            return
        wrapper = acc.unwrap_model(self.model)
        folder.mkdir(parents=True, exist_ok=True)
        wrapper.policy.save_pretrained(str(folder), state_dict=_split_state(state, "policy."),
                                       safe_serialization=True)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(folder))

    def _save_value(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        wrapper = self.accelerator.unwrap_model(self.model)
        if wrapper.value_model is not None:
            wrapper.value_model.save_pretrained(str(folder / ckpt.VALUE_MODEL_DIR),
                                                state_dict=_split_state(state, "value_model."),
                                                safe_serialization=True)
        else:
            head = {k: v.contiguous() for k, v in _split_state(state, "value_head.").items()}
            save_file(head, str(folder / ckpt.VALUE_HEAD_FILE))

    def _write_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` through a staging folder and rename it into place, not yet marked complete
        (:meth:`_finish_checkpoint` does, after ``on_save``); every process takes part (gathers, RNG files)."""
        acc, args = self.accelerator, self.args
        name = f"checkpoint-{self.state.global_step}"
        out = Path(args.output_dir)
        final, staging = out / name, out / f".{name}.staging"
        if acc.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(ckpt.rng_state(), staging / ckpt.rng_file(acc.process_index, acc.num_processes))
        state = self._trained_state()
        self._write_policy(staging, state)
        engine = uses_deepspeed(acc)
        if engine:  # every process: its partition of the weights and optimiser state, through the engine
            save_engine(self, staging)
        # collective under FSDP: every rank's shard
        optimizer_state = None if engine else self._optimizer_state()
        if acc.is_main_process:
            self._save_value(staging, state)
            if optimizer_state is not None:
                torch.save(optimizer_state, staging / "optimizer.pt")
            torch.save(self.lr_scheduler.state_dict(), staging / "scheduler.pt")
            self.state.save_to_json(str(staging / "trainer_state.json"))
            ckpt.write_state(staging, {
                "global_step": self.state.global_step, "episode": self.state.episode,
                "kl_controller": self.kl_controller.state_dict(),
                "reward_pipeline": self.reward_pipeline.state_dict(),
                "window": self.log_window,
                "world_size": acc.num_processes})
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.publish(staging, final)
        acc.wait_for_everyone()
        return final

    def _finish_checkpoint(self, folder: Path) -> None:
        """After the ``on_save`` callbacks wrote into ``folder``: the completion marker last, then the rotation."""
        acc = self.accelerator
        if acc.is_main_process:
            ckpt.mark_complete(folder)
            ckpt.rotate(self.args.output_dir, self.args.save_total_limit, protect=folder)
        acc.wait_for_everyone()

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimiser's whole state: under FSDP each process holds the states of its shards only, so they are
        gathered into one full state (by parameter name; a collective, every process calls it)."""
        if not fsdp_sharded(self.model):
            return self.optimizer.state_dict()
        # imported here: torch.distributed is optional (torch builds without it still train unsharded)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        reshard(self.model)  # the optimiser's parameters are the shards
        return get_optimizer_state_dict(self.model, self.optimizer.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_optimizer_state(self, path: Path) -> None:
        """Restore :meth:`_optimizer_state`; under FSDP the main process reads the file and each shard takes its
        part."""
        if not fsdp_sharded(self.model):
            self.optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return
        # imported here: torch.distributed is optional (torch builds without it still train unsharded)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        reshard(self.model)
        main = self.accelerator.is_main_process
        state = torch.load(path, map_location="cpu", weights_only=True) if main else {}
        set_optimizer_state_dict(self.model, self.optimizer.optimizer, state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))

    def _load_policy_weights(self, folder: Path) -> None:
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.is_peft_model:
            path = folder / ADAPTER_FILE
            if not path.is_file():
                raise InputError(f"no {ADAPTER_FILE}: not a checkpoint of a LoRA policy", path=str(folder))
            result = set_peft_model_state_dict(policy, load_file(str(path)),
                                               adapter_name=self.args.model_adapter_name or "default")
            if getattr(result, "unexpected_keys", None):
                raise InputError(f"adapter weights do not fit this policy (e.g. {result.unexpected_keys[0]})",
                                 path=str(path))
        else:
            ckpt.load_weights(policy, folder, "policy")

    def _load_value_weights(self, folder: Path) -> None:
        wrapper = self.accelerator.unwrap_model(self.model)
        if wrapper.value_model is not None:
            ckpt.load_weights(wrapper.value_model, folder / ckpt.VALUE_MODEL_DIR, "value model")
            return
        path = folder / ckpt.VALUE_HEAD_FILE
        if not path.is_file():
            raise InputError(f"no {ckpt.VALUE_HEAD_FILE}: the checkpoint was trained with a separate value "
                             "model", path=str(folder))
        wrapper.value_head.load_state_dict(load_file(str(path)))

    def _load_checkpoint(self, folder: str | Path, saved: dict[str, Any], *, weights_only: bool) -> None:
        """Restore a checkpoint in two phases: weights (before ``accelerator.prepare``), then the training
        state."""
        folder = Path(folder)
        world = self.accelerator.num_processes
        if saved.get("world_size", world) != world:
            raise InputError(f"saved with {saved.get('world_size')} processes; resume with the same number "
                             f"(now {world}) for the same data order", path=str(folder))
        engine = uses_deepspeed(self.accelerator)
        if weights_only:
            # under DeepSpeed the engine loads them into its partitioned parameters, after prepare
            if not engine:
                self._load_policy_weights(folder)
                self._load_value_weights(folder)
            return
        for name in ("scheduler.pt",) if engine else ("optimizer.pt", "scheduler.pt"):
            if not (folder / name).is_file():
                raise InputError(f"no {name} in the checkpoint", path=str(folder))
        if engine:
            load_engine(self, folder)
        else:
            self._load_optimizer_state(folder / "optimizer.pt")
        self.lr_scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu",
                                                     weights_only=True))
        loaded = TrainerState.load_from_json(str(folder / "trainer_state.json"))
        state = self.state
        state.global_step, state.epoch, state.log_history = loaded.global_step, loaded.epoch, loaded.log_history
        state.best_metric, state.best_model_checkpoint = loaded.best_metric, loaded.best_model_checkpoint
        state.total_flos = loaded.total_flos
        state.episode = int(saved["episode"])
        self.kl_controller.load_state_dict(saved["kl_controller"])
        self.reward_pipeline.load_state_dict(saved["reward_pipeline"])
        self.log_window = list(saved.get("window") or [])
        self.last_saved_step = state.global_step
