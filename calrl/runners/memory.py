"""How much memory a training run needs per process, before any weight is loaded (``calrl train-* --dry-run``).

Model sizes come from each model's ``config.json`` alone: the architecture is built on the meta device
(``accelerate.init_empty_weights``) and its parameters counted (:func:`model_size`); no weight is read, so a
hub model whose weights cannot be downloaded is sized from its config, or from a local copy of the config.

**Model states only**: parameters, gradients and optimiser states (AdamW). Activations, the generation
cache, the logits of a forward pass and the CUDA context come on top of these numbers.

Per process, for a model of ``P`` parameters (``L`` in its largest layer) loaded with ``w`` bytes per
weight (2 for bfloat16 / float16, 4 for float32), ``N`` processes in all, ``n`` per machine:

- a **frozen** model (PPO's reference policy and reward model, GRPO's reference): ``w P`` on every process:
  calrl moves it whole onto each device under every strategy (TRL's GRPO and RLOO shard their reference
  under ZeRO-3: ``w P / N``);
- a **trained** model (the policy, PPO's value model, the reward model of ``train-rm``):

  ============================  ==================  =========================  ==================
  strategy                      parameters          gradients                  optimiser states
  ============================  ==================  =========================  ==================
  DDP / one process             ``w P``             ``w P``                    ``2 w P``
  DeepSpeed ZeRO-0              ``p P``             ``g P + f P``              ``k P``
  DeepSpeed ZeRO-1 / ZeRO-2     ``p P``             ``g P + f P / N``          ``k P / N``
  ZeRO-1 / ZeRO-2, offload      ``p P``             host                       host
  DeepSpeed ZeRO-3              ``p P / N + 2 L``   ``f' P / N + 2 L``         ``k P / N``
  ZeRO-3, optimiser offload     ``p P / N + 2 L``   ``2 L``; rest on host      host
  ZeRO-3, everything offloaded  ``2 L``             ``2 L``; rest on host      host
  FSDP full shard               ``q P / N``         ``q P / N``                ``2 q P / N``
  FSDP shard grad/op            ``q P / N + 2 P``   ``q P / N``                ``2 q P / N``
  FSDP, parameters offloaded    ``2 L'``            ``2 L'``; rest on host     host
  ============================  ==================  =========================  ==================

  DDP keeps the stored dtypes (mixed precision only autocasts), and torch's AdamW holds its two moments in
  the parameter's dtype. DeepSpeed under bf16 / fp16 mixed precision holds 16-bit weights and gradients
  (``p = g = 2``), an fp32 gradient partition (``f = 4``, ``f' = 4`` at ZeRO-3) and an fp32 master copy
  with two fp32 moments (``k = 12``, the ZeRO paper's K); without mixed precision ``p = g = 4``,
  ``f = f' = 0`` and ``k = 8``. At ZeRO-2 this is DeepSpeed's own estimator
  (``deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs``: ``4 P + 16 P / N`` on the
  GPU, ``2 P`` with the optimiser offloaded, and ``P max(4 N, 16) 1.5`` bytes of host memory per machine),
  and at ZeRO-3 its ``estimate_zero3_model_states_mem_needs`` (``4 L + 18 P / N``; ``4 L + 2 P / N`` with
  the optimiser offloaded and ``24 P / M`` host bytes per machine of ``M``; ``4 L`` with the parameters
  offloaded too and ``27 P / M``; with ``zero3_init_flag: false`` the host needs at least ``6 P n``).
  ``L`` there is the largest module's own parameters. accelerate holds an FSDP-trained model's parameters
  in fp32 under mixed precision (``q = 4``; else ``q = w``); ``L'`` is the largest block of
  ``accelerate.utils.calculate_maximum_sizes``; hybrid sharding shards over the ``n`` processes of a machine.
  A LoRA adapter's base model is frozen (``w P``) and only the adapter trains.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from calrl.data.hub import hub_unavailable, offline_mode
from calrl.errors import ConfigError, InputError

GIB = 1024**3
HALF = {"bfloat16": 2, "float16": 2, "bf16": 2, "fp16": 2}
DTYPE_BYTES = {**HALF, "float32": 4, "fp32": 4}
HOST_BUFFER = 1.5  # DeepSpeed's additional_buffer_factor for host memory


@dataclass(frozen=True)
class Strategy:
    """How the trained models are distributed: read from an accelerate config or the launch's environment."""

    kind: str = "ddp"  # ddp (one process, MULTI_GPU, MULTI_CPU), deepspeed, fsdp
    processes: int = 1
    machines: int = 1
    mixed_precision: str = "no"  # no, bf16, fp16
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    zero_init: bool = True
    fsdp_sharding: str = "FULL_SHARD"  # FULL_SHARD, SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD
    use_cpu: bool = False
    source: str = ""

    @property
    def per_machine(self) -> int:
        return max(1, self.processes // max(1, self.machines))

    def label(self) -> str:
        mp = "" if self.mixed_precision == "no" else f", {self.mixed_precision} mixed precision"
        where = f"{self.processes} process{'es' if self.processes != 1 else ''}"
        if self.machines > 1:
            where += f" on {self.machines} machines"
        if self.kind == "deepspeed":
            off = [what for what, on in (("optimiser", self.offload_optimizer), ("parameters", self.offload_params)) if on]
            name = f"DeepSpeed ZeRO-{self.zero_stage}" + (f", {' and '.join(off)} offloaded to the CPU" if off else "")
        elif self.kind == "fsdp":
            name = f"FSDP {self.fsdp_sharding.lower()}" + (", parameters offloaded to the CPU" if self.offload_params else "")
        else:
            name = "one process" if self.processes == 1 else "DDP"
            if self.use_cpu:
                name += " on the CPU"
        return f"{name}{mp}; {where}" + (f" ({self.source})" if self.source else "")


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _device_on(value: Any) -> bool:
    return str(value or "none").strip().lower() not in ("none", "", "null")


def read_accelerate_config(path: str | Path) -> Strategy:
    """The :class:`Strategy` of an accelerate config file (YAML or JSON, as ``accelerate config`` writes)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"cannot read the accelerate config: {exc.strerror or exc}", path=str(path)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not a YAML accelerate config: {str(exc).splitlines()[0]}", path=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("an accelerate config must be a mapping", path=str(path))
    dist = str(data.get("distributed_type", "NO")).upper()
    common = {"processes": int(data.get("num_processes") or 1), "machines": int(data.get("num_machines") or 1),
              "mixed_precision": str(data.get("mixed_precision") or "no").lower(), "use_cpu": bool(data.get("use_cpu")),
              "source": str(path)}
    if dist == "DEEPSPEED":
        ds = dict(data.get("deepspeed_config") or {})
        if ds.get("deepspeed_config_file"):
            ds.update(_deepspeed_json(p.parent, str(ds["deepspeed_config_file"]), str(path)))
        return Strategy(kind="deepspeed", zero_stage=int(ds.get("zero_stage", 2)),
                        offload_optimizer=_device_on(ds.get("offload_optimizer_device")),
                        offload_params=_device_on(ds.get("offload_param_device")),
                        zero_init=_flag(ds.get("zero3_init_flag", False)), **common)
    if dist == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        return Strategy(kind="fsdp", fsdp_sharding=_fsdp_sharding(fsdp), offload_params=_flag(fsdp.get(
            "fsdp_offload_params", False)), **common)
    return Strategy(kind="ddp", **common)


def _fsdp_sharding(fsdp: dict[str, Any]) -> str:
    value = fsdp.get("fsdp_sharding_strategy", fsdp.get("fsdp_reshard_after_forward", "FULL_SHARD"))
    text = str(value).upper()
    if text in ("TRUE", "1"):
        return "FULL_SHARD"
    if text in ("FALSE", "0"):
        return "SHARD_GRAD_OP"
    names = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD"}
    return names.get(text, text if text in names.values() else "FULL_SHARD")


def _deepspeed_json(base: Path, name: str, where: str) -> dict[str, Any]:
    """The accelerate-style keys of a DeepSpeed JSON config (``deepspeed_config_file``)."""
    path = Path(name) if Path(name).is_absolute() or Path(name).exists() else base / name
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read deepspeed_config_file '{name}': {exc}", path=where) from None
    zero = cfg.get("zero_optimization") or {}
    return {"zero_stage": zero.get("stage", 0),
            "offload_optimizer_device": (zero.get("offload_optimizer") or {}).get("device"),
            "offload_param_device": (zero.get("offload_param") or {}).get("device"),
            "zero3_init_flag": True}


def strategy_from_environment(env: dict[str, str] | None = None) -> Strategy | None:
    """The strategy ``accelerate launch`` passed to this process (None when not launched by accelerate)."""
    env = dict(os.environ if env is None else env)
    if "ACCELERATE_MIXED_PRECISION" not in env:
        return None
    common = {"processes": int(env.get("WORLD_SIZE", "1") or 1), "mixed_precision": env["ACCELERATE_MIXED_PRECISION"],
              "use_cpu": _flag(env.get("ACCELERATE_USE_CPU", "false")), "source": "accelerate launch"}
    if _flag(env.get("ACCELERATE_USE_DEEPSPEED", "false")):
        return Strategy(kind="deepspeed", zero_stage=int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")),
                        offload_optimizer=_device_on(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE")),
                        offload_params=_device_on(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE")),
                        zero_init=_flag(env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false")), **common)
    if _flag(env.get("ACCELERATE_USE_FSDP", "false")):
        fsdp = {"fsdp_sharding_strategy": env.get("FSDP_SHARDING_STRATEGY",
                                                  env.get("FSDP_RESHARD_AFTER_FORWARD", "FULL_SHARD"))}
        return Strategy(kind="fsdp", fsdp_sharding=_fsdp_sharding(fsdp),
                        offload_params=_flag(env.get("FSDP_OFFLOAD_PARAMS", "false")), **common)
    return Strategy(kind="ddp", **common)


# ------------------------------------------------------------------------------------------- model sizes
@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of one model, read from its config (no weights)."""

    params: int
    largest_layer: int  # the largest module's own parameters (DeepSpeed's L)
    largest_block: int  # the largest block accelerate would keep whole (FSDP's gathered unit)
    dtype: str  # as loaded: bfloat16, float16, float32
    architecture: str
    trainable: int | None = None  # a LoRA adapter's parameters (None: the whole model trains)

    @property
    def weight_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 4)


def read_config(source: str, *, trust_remote_code: bool = False) -> Any:
    """``AutoConfig`` of a folder, a ``config.json`` file or a hub id (local cache only when the hub is off)."""
    path = Path(source)
    if path.is_file():
        return AutoConfig.from_pretrained(str(path.parent) if path.name == "config.json" else str(path),
                                          trust_remote_code=trust_remote_code)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise InputError("adapter folder without base_model_name_or_path", path=source)
        local = path / base
        return read_config(str(local) if local.exists() else base, trust_remote_code=trust_remote_code)
    if path.exists():
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)

    if hub_unavailable() is not None:
        with offline_mode():
            return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)


def model_size(config: Any, kind: str, *, dtype: str = "auto", lora: Any = None,
               trust_remote_code: bool = False) -> ModelSize:
    """Count the parameters of ``config``'s model (``kind``: ``causal_lm`` or ``sequence_classifier``, one
    label) built on the meta device. ``dtype`` as the recipe's ``model.dtype`` (``auto``: the config's)."""
    config = copy.deepcopy(config)
    if kind == "sequence_classifier":
        config.num_labels = 1
    loader = AutoModelForSequenceClassification if kind == "sequence_classifier" else AutoModelForCausalLM
    with init_empty_weights():
        model = loader.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()  # init_empty_weights builds before tying; shared weights count once
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    total_bytes, (block_bytes, _) = calculate_maximum_sizes(model)
    block = int(block_bytes * params / total_bytes) if total_bytes else 0
    if dtype == "auto":
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        dtype = str(stored).replace("torch.", "") if stored is not None else "float32"
    trainable = _lora_parameters(model, lora, kind) if lora is not None else None
    return ModelSize(params=params, largest_layer=largest, largest_block=block, dtype=dtype,
                     architecture=type(model).__name__, trainable=trainable)


def _lora_parameters(model: Any, lora: Any, kind: str) -> int:
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, bias=lora.bias,
                        modules_to_save=lora.modules_to_save or (["score"] if kind == "sequence_classifier" else None),
                        task_type="SEQ_CLS" if kind == "sequence_classifier" else "CAUSAL_LM")
    with warnings.catch_warnings():  # transformers' deprecation notes from inside peft
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------- the arithmetic
@dataclass
class States:
    """Bytes one process holds for one model: on its device, and on the host for offloaded states."""

    params: float = 0.0
    grads: float = 0.0
    optimizer: float = 0.0
    host: float = 0.0  # host memory per machine (offloaded optimiser / parameters)

    @property
    def device(self) -> float:
        return self.params + self.grads + self.optimizer


def frozen_states(size: ModelSize, strategy: Strategy, *, sharded_under_zero3: bool = False) -> States:
    """A model that only runs forward passes: whole on every process (sharded where its trainer shards it)."""
    w = size.weight_bytes
    if sharded_under_zero3 and strategy.kind == "deepspeed" and strategy.zero_stage == 3:
        return States(params=w * size.params / strategy.processes)
    return States(params=w * size.params)


def trained_states(size: ModelSize, strategy: Strategy) -> States:
    """Parameters, gradients and AdamW states of a trained model, by the table of the module docstring."""
    if size.trainable is not None:  # LoRA: the base is frozen, the adapter trains in the base's dtype
        adapter = ModelSize(params=size.trainable, largest_layer=0, largest_block=0, dtype=size.dtype,
                            architecture="adapter")
        base, trained = frozen_states(size, strategy), trained_states(adapter, strategy)
        return States(params=base.params + trained.params, grads=trained.grads, optimizer=trained.optimizer,
                      host=trained.host)
    P, N = float(size.params), float(strategy.processes)
    mixed = strategy.mixed_precision in ("bf16", "fp16")
    if strategy.kind == "deepspeed":
        return _deepspeed(P, float(size.largest_layer), N, strategy, mixed)
    if strategy.kind == "fsdp":
        return _fsdp(P, float(size.largest_block), strategy, 4 if mixed else size.weight_bytes)
    w = size.weight_bytes
    return States(params=w * P, grads=w * P, optimizer=2 * w * P)


def _deepspeed(P: float, L: float, N: float, s: Strategy, mixed: bool) -> States:
    p, g, f, k = (2, 2, 4, 12) if mixed else (4, 4, 0, 8)
    if s.zero_stage == 3:
        if s.offload_params and s.offload_optimizer:
            return States(params=2 * L, grads=2 * L, host=_z3_host(P, 18, s))
        if s.offload_optimizer:
            return States(params=p * P / N + 2 * L, grads=2 * L, host=_z3_host(P, 16, s))
        return States(params=p * P / N + 2 * L, grads=f * P / N + 2 * L, optimizer=k * P / N,
                      host=0.0 if s.zero_init else 4 * P * s.per_machine * HOST_BUFFER)
    if s.offload_optimizer and s.zero_stage in (1, 2):
        return States(params=p * P, host=P * max(4 * N, 16) * HOST_BUFFER)
    shard = 1.0 if s.zero_stage == 0 else N
    return States(params=p * P, grads=g * P + f * P / shard, optimizer=k * P / shard)


def _z3_host(P: float, per_param: int, s: Strategy) -> float:
    """DeepSpeed's ZeRO-3 host estimate per machine (``zero_init`` or not)."""
    machines = max(1, s.machines)
    if s.zero_init:
        return P * per_param / machines * HOST_BUFFER
    return P * max(4 * s.per_machine, per_param / machines) * HOST_BUFFER


def _fsdp(P: float, block: float, s: Strategy, q: int) -> States:
    shard = float(s.per_machine if s.fsdp_sharding == "HYBRID_SHARD" else s.processes)
    if s.fsdp_sharding == "NO_SHARD":
        shard = 1.0
    if s.offload_params:
        return States(params=2 * block, grads=2 * block, host=4 * q * P / max(1, s.machines))
    params = q * P / shard + (2 * P if s.fsdp_sharding == "SHARD_GRAD_OP" else 0.0)
    return States(params=params, grads=q * P / shard, optimizer=2 * q * P / shard)


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class ModelRow:
    """One model of the run: its role, where it comes from, and its states (None when it cannot be sized)."""

    role: str
    source: str
    trained: bool
    size: ModelSize | None = None
    states: States | None = None
    note: str = ""


@dataclass
class MemoryPlan:
    strategy: Strategy
    rows: list[ModelRow] = field(default_factory=list)

    @property
    def device_total(self) -> float:
        return sum(r.states.device for r in self.rows if r.states is not None)

    @property
    def host_total(self) -> float:
        return sum(r.states.host for r in self.rows if r.states is not None)

    @property
    def complete(self) -> bool:
        return all(r.states is not None for r in self.rows)


def device_memory() -> tuple[float | None, str]:
    """Bytes of the first GPU (and its name), or None with why."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return float(props.total_memory), props.name
    return None, "no GPU here"


def host_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def count(value: int) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M"


def launch_strategy(recipe: Any, *, processes: int | None = None) -> Strategy:
    """The strategy a run of ``recipe`` (a :class:`calrl.runners.recipe.Recipe`) is launched with: ``accelerate
    launch``'s own settings when running under it, else the recipe's ``launch.accelerate_config``, else one process with the recipe's bf16 / fp16 setting;
    ``processes`` replaces the process count."""
    strategy = strategy_from_environment()
    name = recipe.launch.accelerate_config
    if strategy is None and name:
        path = Path(name).expanduser()
        if not path.exists() and (recipe.base_dir / name).exists():
            path = recipe.base_dir / name
        if not path.is_file():
            raise ConfigError(f"key 'launch.accelerate_config': '{name}' is not a file", path=recipe.path,
                              line=recipe.line_of("launch", "accelerate_config"))
        strategy = read_accelerate_config(path)
    if strategy is None:
        args = recipe.training
        mixed = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else "no"
        strategy = Strategy(mixed_precision=mixed, use_cpu=bool(getattr(args, "use_cpu", False)))
    if processes is not None:
        strategy = dataclasses.replace(strategy, processes=processes)
    return strategy
