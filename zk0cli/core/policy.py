"""The SmolVLA policy factory: model, processors, trainable tensors, save and reload.

Two ways to get a policy (``model.kind``):

* ``tiny``: LeRobot's real :class:`SmolVLAPolicy` on top of a small, randomly initialised
  SmolVLM (a 4-layer llama text model, a 1-layer vision model at 64 px) whose configuration
  and tokenizer zk0 writes to a local directory (:func:`tiny_vlm_dir`), with
  ``load_vlm_weights=False``: nothing is fetched from the Hub. Same seed, same weights.
* ``pretrained``: ``SmolVLAPolicy.from_pretrained(model.path)`` (Hub id or local directory).

Either way the pre/post-processor pipelines are built from LeRobot's SmolVLA factory with
the normalisation statistics of the data being used (never silently without them) and
the configured camera rename map as the pipeline's first step. Which tensors train, and
therefore travel between server and clients, is defined once, by
:func:`trainable_parameter_names` (SmolVLA's default freezing: action expert and
projections), or, with ``model.peft``, the LoRA adapters only (:func:`apply_peft`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli.core.contract import (  # noqa: F401  (file names re-exported)
    ADAPTER_DIR,
    POLICY_FILES,
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
)
from zk0cli.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    FeatureMismatchError,
    FieldProblem,
)
from zk0cli.log import library_prints, logger

if TYPE_CHECKING:
    import torch
    from lerobot.configs import PolicyFeature
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.processor import PolicyProcessorPipeline

    from zk0cli.core.config import ModelConfig, PeftConfig

#: Bump when the tiny VLM directory's content changes (it is cached per version).
TINY_VLM_VERSION = 1
TINY_VLM_PREFIX = "tiny-vlm-"
#: Tiny policy dimensions (see :func:`tiny_smolvla_config`).
TINY_IMAGE_SIZE = 64
TINY_MAX_DIM = 8
TINY_CHUNK_SIZE = 10


# SmolVLM's special tokens (the policy reads the ids of the fake-image and global-image
# tokens from the tokenizer; the processor reads the others).
_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<end_of_utterance>",
    "<video>",
)


@dataclass
class PolicyBundle:
    """A SmolVLA policy with its LeRobot processor pipelines.

    Attributes:
        policy: The policy, on ``device``.
        preprocessor: Raw dataset batch -> model batch (rename, batch dim, tokenise the
            task, move to device, normalise state/action with the data's statistics).
        postprocessor: Model actions -> unnormalised actions on CPU.
        device: Where the policy lives.
        autocast_dtype: ``model.dtype``: ``"bfloat16"`` makes the trainer run forwards
            under ``torch.autocast`` on cuda (weights stay float32); ``"float32"`` none.
    """

    policy: SmolVLAPolicy
    preprocessor: PolicyProcessorPipeline
    postprocessor: PolicyProcessorPipeline
    device: torch.device
    autocast_dtype: str = "float32"


# --- the tiny offline VLM --------------------------------------------------------------


def _cache_root(cache_dir: Path | None) -> Path:
    from zk0cli.core.cache import cache_root

    return Path(cache_dir) if cache_dir is not None else cache_root()


def _tiny_vlm_files() -> dict[str, str]:
    """The tiny SmolVLM directory's files, as text (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # A byte-level BPE without merges: every string tokenises (one token per byte), the
    # vocabulary is fixed by construction, and SmolVLM's special tokens come first.
    vocab = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(_SPECIAL_TOKENS))
    pad_id = vocab["<|im_end|>"]
    text_config = {
        "model_type": "llama",
        "vocab_size": 320,  # >= the tokenizer's 264 tokens
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "pad_token_id": pad_id,
        "tie_word_embeddings": False,
    }
    vision_config = {
        "model_type": "smolvlm_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": 16,  # 4x4 patches; pixel shuffle by 2 -> 4 tokens per image
        "num_channels": 3,
    }
    config = {
        "model_type": "smolvlm",
        "architectures": ["SmolVLMForConditionalGeneration"],
        "image_token_id": vocab["<image>"],
        "scale_factor": 2,
        "pad_token_id": pad_id,
        "tie_word_embeddings": False,
        "text_config": text_config,
        "vision_config": vision_config,
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "padding_side": "right",
        "extra_special_tokens": {
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    }
    image_processor = {
        "image_processor_type": "SmolVLMImageProcessor",
        "processor_class": "SmolVLMProcessor",
        "do_resize": True,
        "size": {"longest_edge": TINY_IMAGE_SIZE},
        "max_image_size": {"longest_edge": TINY_IMAGE_SIZE},
        "do_image_splitting": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
        "resample": 1,
    }
    processor = {"processor_class": "SmolVLMProcessor", "image_seq_len": 4}

    def dump(obj: object) -> str:
        return json.dumps(obj, indent=2, sort_keys=True) + "\n"

    return {
        "config.json": dump(config),
        "tokenizer.json": tokenizer.to_str(pretty=True),
        "tokenizer_config.json": dump(tokenizer_config),
        "preprocessor_config.json": dump(image_processor),
        "processor_config.json": dump(processor),
    }


def tiny_vlm_dir(cache_dir: Path | None = None) -> Path:
    """Write the tiny SmolVLM configuration/tokenizer directory once and return it.

    The directory holds ``config.json`` (a ``smolvlm`` config with a llama text model of
    hidden size 64 × 4 layers and a ``smolvlm_vision`` model of hidden size 32 × 1 layer
    at 64 px), ``preprocessor_config.json`` (SmolVLMImageProcessor),
    ``processor_config.json``, and a byte-level ``tokenizer.json``/``tokenizer_config.json``
    with SmolVLM's special image tokens. No weights: SmolVLA initialises them randomly.
    The content is the same every time; it is written to a temporary directory and
    renamed into place, so concurrent processes never see a half-written directory.

    Args:
        cache_dir: Parent folder; default :func:`zk0cli.core.cache.cache_root`.

    Returns:
        ``<cache>/tiny-vlm-<version>``.
    """
    target = _cache_root(cache_dir) / f"{TINY_VLM_PREFIX}{TINY_VLM_VERSION}"
    files = _tiny_vlm_files()
    if target.is_dir() and all((target / n).is_file() for n in files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race, or a stale partial directory
            if not all((target / n).is_file() for n in files):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.debug("wrote the tiny VLM directory %s", target)
    return target


def _is_tiny_vlm_path(name: str) -> bool:
    return Path(name).name.startswith(TINY_VLM_PREFIX)


# --- features and statistics ---------------------------------------------------------------


def policy_features_from_dataset(
    meta: LeRobotDatasetMetadata, rename_map: Mapping[str, str]
) -> dict[str, PolicyFeature]:
    """Policy features (inputs and outputs) of a dataset, after the rename map.

    Args:
        meta: The dataset's metadata.
        rename_map: Dataset key -> policy key (e.g. ``observation.images.top`` ->
            ``observation.images.camera1``); keys not in the map are kept.

    Returns:
        ``{key: PolicyFeature}`` for ``observation.state``, ``observation.images.*`` and
        ``action``; image shapes are ``(C, H, W)``.
    """
    from lerobot.utils.feature_utils import dataset_to_policy_features

    features = dataset_to_policy_features(meta.features)
    return {rename_map.get(k, k): v for k, v in features.items()}


def check_features(
    dataset_name: str,
    dataset_keys: Iterable[str],
    policy_keys: Iterable[str],
    *,
    allow_missing_cameras: bool = False,
) -> None:
    """Check that a dataset provides exactly the policy's observation keys.

    Args:
        dataset_name: For the message.
        dataset_keys: The dataset's feature keys (after the rename map); only
            ``observation.*`` keys are compared.
        policy_keys: The policy's input feature keys.
        allow_missing_cameras: Accept a dataset that lacks some of the policy's
            ``observation.images.*`` keys (SmolVLA skips absent cameras, e.g.
            ``smolvla_base``'s ``camera3`` with a two-camera SO-100 dataset) as long as it
            provides at least one of them and nothing extra. A warning is logged.

    Raises:
        FeatureMismatchError: Listing both sets, what is missing and extra, and a rename map.
    """
    ds = sorted({k for k in dataset_keys if k.startswith("observation.")})
    pol = sorted({k for k in policy_keys if k.startswith("observation.")})
    if ds == pol:
        return
    missing = set(pol) - set(ds)
    if (
        allow_missing_cameras
        and set(ds) <= set(pol)
        and all(k.startswith("observation.images.") for k in missing)
        and any(k.startswith("observation.images.") for k in ds)
    ):
        logger.warning("dataset %s lacks the policy cameras %s; SmolVLA will skip them",
                       dataset_name, ", ".join(sorted(missing)))
        return
    raise FeatureMismatchError(dataset_name, ds, pol)


def _check_stats(stats: Mapping[str, Mapping[str, Any]] | None, cfg: Any) -> None:
    """Raise unless ``stats`` hold mean/std for every state and action feature."""
    from lerobot.configs import FeatureType

    needed = [
        k
        for k, f in {**cfg.input_features, **cfg.output_features}.items()
        if f.type in (FeatureType.STATE, FeatureType.ACTION)
    ]
    missing = [
        k for k in needed if not stats or k not in stats or not {"mean", "std"} <= set(stats[k])
    ]
    if missing:
        have = ", ".join(sorted(stats or {})) or "(none)"
        raise DatasetError(
            f"Normalisation statistics (mean/std) are missing for {', '.join(missing)}; the "
            f"statistics provided cover: {have}. zk0 never trains without normalisation. "
            "Use a dataset whose meta/stats.json covers these features, and make sure "
            "data.rename_map renames dataset keys to the policy's keys."
        )


# --- building ------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; other names as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def tiny_smolvla_config(
    features: Mapping[str, PolicyFeature], *, device: str, chunk_size: int | None = None
) -> Any:
    """The ``SmolVLAConfig`` of the tiny preset for the given features.

    Args:
        features: Input and output policy features (after the rename map).
        device: Torch device name.
        chunk_size: Action chunk length; default :data:`TINY_CHUNK_SIZE`.

    Returns:
        A ``SmolVLAConfig`` with the tiny VLM, ``load_vlm_weights=False``, 64×64 image
        padding and state/action padded to 8.
    """
    from lerobot.configs import FeatureType
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    chunk = chunk_size or TINY_CHUNK_SIZE
    return SmolVLAConfig(
        vlm_model_name=str(tiny_vlm_dir()),
        load_vlm_weights=False,
        num_vlm_layers=4,
        resize_imgs_with_padding=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE),
        max_state_dim=TINY_MAX_DIM,
        max_action_dim=TINY_MAX_DIM,
        chunk_size=chunk,
        n_action_steps=chunk,
        device=device,
        input_features={k: f for k, f in features.items() if f.type != FeatureType.ACTION},
        output_features={k: f for k, f in features.items() if f.type == FeatureType.ACTION},
    )


def make_processors(
    cfg: Any, *, stats: Mapping[str, Mapping[str, Any]] | None, rename_map: Mapping[str, str]
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """LeRobot's SmolVLA pre/post-processors with the data's stats and the rename map.

    Raises:
        DatasetError: ``stats`` lack mean/std for a state or action feature.
    """
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
    from lerobot.processor import RenameObservationsProcessorStep

    _check_stats(stats, cfg)
    pre, post = make_smolvla_pre_post_processors(cfg, dataset_stats=_as_tensors(stats))
    for step in pre.steps:
        if isinstance(step, RenameObservationsProcessorStep):
            step.rename_map = dict(rename_map)
    return pre, post


def rename_map_of(bundle: PolicyBundle) -> dict[str, str]:
    """The rename map (dataset key -> policy key) of a bundle's pre-processor; ``{}`` if none."""
    from lerobot.processor import RenameObservationsProcessorStep

    for step in bundle.preprocessor.steps:
        if isinstance(step, RenameObservationsProcessorStep):
            return dict(step.rename_map)
    return {}


def _as_tensors(stats: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    import numpy as np
    import torch

    out: dict[str, dict[str, Any]] = {}
    for key, s in (stats or {}).items():
        out[key] = {
            n: torch.as_tensor(np.asarray(v), dtype=torch.float32)
            if isinstance(v, (np.ndarray, list, float, int)) else v
            for n, v in s.items()
        }
    return out


def expected_input_features(
    model: ModelConfig, meta: LeRobotDatasetMetadata, rename_map: Mapping[str, str]
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The observation inputs the policy built by :func:`build_policy` will declare.

    Args:
        model: ``tiny``: the inputs are ``meta``'s after ``rename_map``; ``pretrained``:
            the checkpoint's own.
        meta: The reference dataset's metadata.
        rename_map: Its dataset key -> policy key.

    Returns:
        ``{key: (FeatureType name, shape)}`` of the ``observation.*`` inputs.

    Raises:
        CheckpointError: ``model.path`` cannot be read.
    """
    if model.kind == "tiny":
        features: Mapping[str, Any] = policy_features_from_dataset(meta, rename_map)
    else:
        assert model.path is not None  # enforced by ModelConfig
        features = _load_pretrained_config(model.path).input_features
    return {k: (str(getattr(f.type, "name", f.type)), tuple(f.shape))
            for k, f in features.items() if k.startswith("observation.")}


def build_policy(
    model: ModelConfig,
    *,
    meta: LeRobotDatasetMetadata,
    rename_map: Mapping[str, str],
    stats: Mapping[str, Mapping[str, Any]] | None,
    seed: int,
    allow_missing_cameras: bool = False,
) -> PolicyBundle:
    """Build the SmolVLA policy and its processors for a dataset.

    Args:
        model: ``kind="tiny"`` builds the offline tiny SmolVLA with features from ``meta``;
            ``kind="pretrained"`` loads ``model.path`` (Hub id or local directory) and
            checks its input features against the dataset's.
        meta: Metadata of the dataset the policy will see (features, fps).
        rename_map: Dataset key -> policy key, applied by the pre-processor.
        stats: Normalisation statistics of the data, keyed by (renamed) feature.
        seed: Seed of the random initialisation (tiny: same seed -> identical weights).
        allow_missing_cameras: Passed to :func:`check_features` (pretrained only).

    Returns:
        The policy (in train mode, on ``model.device``) and its processors.

    Raises:
        FeatureMismatchError: The dataset's observation keys differ from the policy's.
        DatasetError: ``stats`` do not cover the state/action features.
        CheckpointError: ``model.path`` cannot be loaded.
        ConfigError: ``model.dtype = "bfloat16"`` on a device other than cuda.
    """
    import torch
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    device = resolve_device(model.device)
    if model.dtype == "bfloat16" and device.type != "cuda":
        raise ConfigError([FieldProblem(
            "model.dtype", model.dtype,
            f"bfloat16 autocast needs a cuda device, and model.device = {model.device!r} "
            f"resolved to {device.type!r}; use model.dtype = 'float32' here")])
    features = policy_features_from_dataset(meta, rename_map)
    dataset_name = getattr(meta, "repo_id", "dataset")
    if model.kind == "tiny":
        cfg = tiny_smolvla_config(features, device=device.type, chunk_size=model.chunk_size)
        cfg.freeze_vision_encoder = model.freeze_vision_encoder
        cfg.train_expert_only = model.train_expert_only
        _check_stats(stats, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with library_prints("lerobot"):
                policy = SmolVLAPolicy(cfg)
    else:
        assert model.path is not None  # enforced by ModelConfig
        cfg = _load_pretrained_config(model.path)
        cfg.device = device.type
        cfg.freeze_vision_encoder = model.freeze_vision_encoder
        cfg.train_expert_only = model.train_expert_only
        if model.chunk_size:
            cfg.chunk_size = cfg.n_action_steps = model.chunk_size
        check_features(dataset_name, features, cfg.input_features,
                       allow_missing_cameras=allow_missing_cameras)
        _check_stats(stats, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with library_prints("lerobot"):
                policy = SmolVLAPolicy.from_pretrained(model.path, config=cfg)
    if model.peft is not None:
        if model.kind == "pretrained":
            policy.name_or_path = model.path  # the adapter's base_model_name_or_path
        policy = apply_peft(policy, model.peft, seed=seed)
    policy.to(device)
    policy.train()
    pre, post = make_processors(cfg, stats=stats, rename_map=rename_map)
    logger.info(
        "built SmolVLA (%s) on %s: %s parameters, %s trainable",
        model.kind, device, sum(p.numel() for p in policy.parameters()),
        sum(p.numel() for p in policy.parameters() if p.requires_grad),
    )
    return PolicyBundle(policy=policy, preprocessor=pre, postprocessor=post, device=device,
                        autocast_dtype=model.dtype)


def _load_pretrained_config(path: str) -> Any:
    """``PreTrainedConfig.from_pretrained`` with the tiny VLM path fixed up and clear errors."""
    from lerobot.configs import PreTrainedConfig

    local = Path(path)
    if local.exists() and not (local / "config.json").is_file():
        raise CheckpointError(path, ["config.json is missing (not a SmolVLA checkpoint)"])
    try:
        cfg = PreTrainedConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - Hub/IO errors come in many types
        raise CheckpointError(
            path,
            [f"cannot read the policy config ({type(err).__name__}: {err})",
             "offline (HF_HUB_OFFLINE=1) only local directories and cached Hub ids load"],
        ) from err
    if getattr(cfg, "type", None) != "smolvla":
        raise CheckpointError(path, [f"policy type is {cfg.type!r}, zk0 trains 'smolvla'"])
    name = cfg.vlm_model_name
    if local.is_dir() and name == VLM_SUBDIR and (local / VLM_SUBDIR).is_dir():
        cfg.vlm_model_name = str((local / VLM_SUBDIR).absolute())  # a self-contained checkpoint
    elif _is_tiny_vlm_path(name) or (Path(name).is_absolute() and not Path(name).is_dir()):
        cfg.vlm_model_name = str(tiny_vlm_dir())
    return cfg


# --- LoRA adapters (model.peft) ----------------------------------------------------------


def is_peft_model(policy: object) -> bool:
    """Whether ``policy`` is a ``peft.PeftModel`` (without importing peft when unused)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(policy, peft.PeftModel)


def lora_targets(policy: Any, settings: PeftConfig) -> str | list[str]:
    """The modules that get adapters: ``settings.target_modules``, else LeRobot's defaults.

    LeRobot's SmolVLA default (``SmolVLAPolicy._get_default_peft_targets``, the hook its
    ``wrap_with_peft`` reads) is a regular expression over full module names: the action
    expert's ``q_proj``/``v_proj`` and the ``state_proj``/``action_*`` projections.
    """
    if settings.target_modules is not None:
        return settings.target_modules
    return str(policy._get_default_peft_targets()["target_modules"])


def apply_peft(policy: SmolVLAPolicy, settings: PeftConfig, *, seed: int) -> Any:
    """Wrap the policy with LoRA adapters; freeze everything else.

    The same steps as LeRobot's ``PreTrainedPolicy.wrap_with_peft`` (freeze the base,
    ``peft.get_peft_model`` with a ``LoraConfig``), without its refusal of a policy that
    has no ``pretrained_path`` (the tiny preset). The adapters' random initialisation is
    drawn from ``seed``, so every site and the server build bitwise the same A matrices.
    With ``settings.aggregation = "ffa"`` (FFA-LoRA, Sun et al. 2024, "Improving LoRA in
    privacy-preserving federated learning") the A matrices are then frozen too: only the
    B matrices (zero at the start, as in LoRA) train and travel. With A shared and fixed,
    a site's weight update ``ΔW_i = (alpha / r) · B_i · A`` is linear in ``B_i``, so the
    weighted mean of the B's gives exactly the weighted mean of the ΔW's, and so does any
    other linear server step (server momentum, Gaussian DP noise); adaptive server
    optimizers (FedAdam, FedYogi, FedAdagrad) scale B's elements, which is still one
    shared A times one B, but no longer a per-element step on ΔW.

    Args:
        policy: A freshly built SmolVLA policy (float32, on CPU or its device).
        settings: ``model.peft``.
        seed: Seed of the adapters' initialisation (the run's seed).

    Returns:
        The ``peft.PeftModel``; its trainable parameters are named
        ``base_model.model.<module>.lora_B.default.weight`` (and ``lora_A`` with
        ``aggregation = "naive"``).

    Raises:
        ConfigError: ``model.peft.target_modules`` matches no module of the policy, or
            a module PEFT cannot adapt.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(policy, settings)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,  # type: ignore[arg-type]
                        lora_dropout=settings.dropout, target_modules=targets)
    for p in policy.parameters():
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with library_prints("peft"):
                wrapped = get_peft_model(policy, config)
    except ValueError as err:
        text = str(err)
        if "not found in the base model" in text:
            reason = "it matches no module of the policy"
        elif "is not supported" in text:
            reason = ("it matches a module LoRA cannot adapt (a container, not a "
                      "torch.nn.Linear / Embedding / Conv layer)")
        else:
            reason = f"PEFT refused it ({text.splitlines()[0][:200]})"
        raise ConfigError([FieldProblem(
            "model.peft.target_modules", targets,
            f"{reason}; give a list of module name suffixes (e.g. ['q_proj', 'v_proj']) or "
            "a regular expression over full module names of linear layers, or leave it "
            "unset for LeRobot's SmolVLA default")]) from err
    if settings.aggregation == "ffa":
        for name, p in wrapped.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    return wrapped


@dataclass(frozen=True)
class PeftSummary:
    """What ``model.peft`` trains and sends, counted on the real architecture.

    Attributes:
        adapted_modules: Modules that got adapters.
        tensors: Trainable (travelling) tensors.
        parameters: Their elements.
        full_parameters: Trainable elements of the same policy without ``model.peft``.
    """

    adapted_modules: int
    tensors: int
    parameters: int
    full_parameters: int

    def describe(self, settings: PeftConfig, transport_dtype: str) -> str:
        """One console line: rank, method, what travels and what it replaces."""
        nbytes = self.parameters * (2 if transport_dtype == "bfloat16" else 4)
        size = f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"
        return (f"LoRA rank {settings.rank} ({settings.aggregation}) on "
                f"{self.adapted_modules} modules: {self.parameters:,} parameters travel per "
                f"client per round ({size} in {transport_dtype}) instead of the full "
                f"expert's {self.full_parameters:,}")


def check_peft(model: ModelConfig) -> PeftSummary | None:
    """Check ``model.peft`` against the policy's architecture, built without weights.

    The policy is built on PyTorch's ``meta`` device (no memory, no weights loaded; about
    0.3 s for full-size SmolVLA) and wrapped as :func:`apply_peft` would, so a
    ``target_modules`` that matches nothing is refused before any process starts. Module
    names and parameter counts do not depend on the dataset (SmolVLA pads state and
    action to ``max_state_dim`` / ``max_action_dim``).

    Returns:
        The counts, or ``None`` without ``model.peft``.

    Raises:
        ConfigError: ``model.peft.target_modules`` matches no adaptable module.
        CheckpointError: ``model.path``'s configuration cannot be read.
    """
    import torch
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    if model.peft is None:
        return None
    if model.kind == "tiny":
        feats = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
                 "action": PolicyFeature(FeatureType.ACTION, (6,))}
        cfg = tiny_smolvla_config(feats, device="cpu", chunk_size=model.chunk_size)
    else:
        assert model.path is not None  # enforced by ModelConfig
        cfg = _load_pretrained_config(model.path)
        cfg.load_vlm_weights = False  # the architecture only: weights are never read
        cfg.device = "cpu"
    cfg.freeze_vision_encoder = model.freeze_vision_encoder
    cfg.train_expert_only = model.train_expert_only
    try:
        with torch.device("meta"), library_prints("lerobot"):
            policy = SmolVLAPolicy(cfg)
    except OSError as err:  # the VLM's configuration is not reachable (offline, no cache)
        raise CheckpointError(str(model.path), [
            f"cannot build its architecture ({type(err).__name__}: {err})"]) from err
    full = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    wrapped = apply_peft(policy, model.peft, seed=0)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    adapted = sum(1 for n, _ in wrapped.named_modules() if n.endswith(".lora_B"))
    return PeftSummary(adapted_modules=adapted, tensors=len(trainable),
                       parameters=sum(p.numel() for p in trainable), full_parameters=full)


def merged_policy(policy: Any) -> SmolVLAPolicy:
    """A plain ``SmolVLAPolicy`` with the LoRA updates merged into its weights.

    ``W + (alpha / r) · B · A`` for every adapted layer (PEFT's ``merge_and_unload``,
    in float32, on a copy: ``policy`` keeps training unchanged). A policy without
    adapters is returned as it is.
    """
    if not is_peft_model(policy):
        return policy  # type: ignore[no-any-return]
    with library_prints("peft"):
        return copy.deepcopy(policy).merge_and_unload(safe_merge=True)  # type: ignore[no-any-return]


# --- trainable tensors -----------------------------------------------------------------


def trainable_parameter_names(policy: torch.nn.Module) -> list[str]:
    """Names of the parameters that train and travel, in ``named_parameters`` order.

    This is the one definition used by the trainer and the transport: every parameter
    with ``requires_grad`` after SmolVLA's own freezing (by default the action expert
    ``model.vlm_with_expert.lm_expert.*`` and the ``state_proj``/``action_*`` projections).
    """
    return [n for n, p in policy.named_parameters() if p.requires_grad]


def get_trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU float32 clones of the trainable parameters, keyed by name."""
    import torch

    wanted = set(trainable_parameter_names(policy))
    return {
        n: p.detach().to("cpu", torch.float32).clone()
        for n, p in policy.named_parameters()
        if n in wanted
    }


def set_trainable_state(
    policy: torch.nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Copy trainable tensors into the policy after checking them.

    Args:
        policy: The policy to update in place.
        tensors: ``{name: float32 tensor}`` exactly as :func:`get_trainable_state` returns.
        source: Who sent them, for the error message.

    Raises:
        TransportError: Names, shapes or dtypes differ, or values are not finite.
    """
    import torch

    from zk0cli.core.transport import TensorSpec, validate_tensors

    params = dict(policy.named_parameters())
    names = trainable_parameter_names(policy)
    expected = {n: TensorSpec(tuple(params[n].shape), "float32") for n in names}
    validate_tensors(tensors, expected, source=source)
    with torch.no_grad():
        for n in names:
            params[n].copy_(tensors[n].to(params[n].device, params[n].dtype))


# --- save and reload -----------------------------------------------------------------------


#: Folder inside a checkpoint holding the VLM's config and tokenizer files when the policy
#: was built from a local VLM directory (the tiny preset): the checkpoint names it by this
#: relative path, never by the coordinator's absolute path.
VLM_SUBDIR = "vlm"


def _local_vlm(cfg: Any) -> Path | None:
    name = str(getattr(cfg, "vlm_model_name", "") or "")
    path = Path(name)
    return path if path.is_absolute() and path.is_dir() else None


def save_bundle(bundle: PolicyBundle, directory: Path) -> None:
    """Write the policy (``config.json``, ``model.safetensors``) and both processors.

    A policy with LoRA adapters (``model.peft``) is written merged (:func:`merged_policy`):
    the directory is a plain SmolVLA policy that LeRobot loads without zk0 or peft. The
    adapter itself goes to ``<directory>/adapter`` in PEFT's layout (:func:`save_adapter`).

    The saved ``config.json`` has ``push_to_hub = false``: ``lerobot-train
    --policy.path=<checkpoint>`` otherwise stops with "'repo_id' argument missing".
    A policy built from a local VLM directory (the tiny preset) also gets a copy of that
    directory's config and tokenizer files in ``<directory>/vlm``, and its
    ``config.json`` and pre-processor name ``vlm`` instead of the local path: the
    checkpoint loads on any machine (``SmolVLAPolicy.from_pretrained`` run from the
    checkpoint folder, or :func:`load_bundle` from anywhere).

    Args:
        bundle: What to save.
        directory: Target directory (created if needed).
    """
    from lerobot.processor import TokenizerProcessorStep

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy = merged_policy(bundle.policy)  # the policy itself without adapters
    cfg = policy.config
    if hasattr(cfg, "push_to_hub"):
        cfg.push_to_hub = False  # zk0 pushes with `zk0 push`; LeRobot must not try on its own
    local = _local_vlm(cfg)
    steps = [s for s in bundle.preprocessor.steps if isinstance(s, TokenizerProcessorStep)
             and local is not None and s.tokenizer_name == str(local)]
    if local is not None:
        shutil.copytree(local, directory / VLM_SUBDIR, dirs_exist_ok=True)
        cfg.vlm_model_name = VLM_SUBDIR
        for step in steps:
            step.tokenizer_name = VLM_SUBDIR
    try:
        policy.save_pretrained(directory)
        bundle.preprocessor.save_pretrained(directory)
        bundle.postprocessor.save_pretrained(directory)
        if policy is not bundle.policy:
            save_adapter(bundle.policy, directory / ADAPTER_DIR)
    finally:
        if local is not None:
            cfg.vlm_model_name = str(local)
            for step in steps:
                step.tokenizer_name = str(local)


def save_adapter(policy: Any, directory: Path) -> None:
    """Write a ``PeftModel``'s adapter: ``adapter_config.json``, ``adapter_model.safetensors``.

    PEFT's own layout and tensors (float32; A and B of every adapted layer), loadable with
    ``peft.PeftModel.from_pretrained(<the base policy>, directory)``. PEFT's generated
    README is not kept (the checkpoint's model card describes the adapter).
    """
    with library_prints("peft"):
        policy.save_pretrained(str(directory))
    (Path(directory) / "README.md").unlink(missing_ok=True)


def adapter_file_key(name: str, adapter: str = "default") -> str:
    """The key PEFT saves a trainable parameter under: its name without ``.<adapter>``.

    ``base_model.model.x.lora_B.default.weight`` -> ``base_model.model.x.lora_B.weight``
    (``peft.get_peft_model_state_dict``'s rule; the resume test checks the round trip).
    """
    return name.replace(f".{adapter}.", ".")


def load_bundle(directory: Path, *, device: str = "cpu") -> PolicyBundle:
    """Reload a bundle written by :func:`save_bundle`, offline.

    The stored ``vlm_model_name`` (and the pre-processor's tokenizer path) is replaced by
    :func:`tiny_vlm_dir` when it names the tiny preset or a local directory that no longer
    exists, so a checkpoint moved to another machine still loads.

    Args:
        directory: A directory holding ``config.json``, ``model.safetensors``,
            ``policy_preprocessor.json`` and ``policy_postprocessor.json``.
        device: Torch device name (``auto`` allowed).

    Returns:
        The bundle, with tensors identical to the saved ones.

    Raises:
        CheckpointError: A file is missing or the policy does not load.
    """
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    directory = Path(directory)
    needed = list(POLICY_FILES)
    missing = [f"{n} is missing" for n in needed if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(str(directory), missing)
    dev = resolve_device(device)
    cfg = _load_pretrained_config(str(directory))
    cfg.device = dev.type
    with library_prints("lerobot"):
        policy = SmolVLAPolicy.from_pretrained(str(directory), config=cfg)
    policy.to(dev)
    pre, post = make_pre_post_processors(
        cfg,
        pretrained_path=str(directory),
        preprocessor_overrides={
            "tokenizer_processor": {"tokenizer_name": cfg.vlm_model_name},
            "device_processor": {"device": dev.type},
        },
    )
    return PolicyBundle(policy=policy, preprocessor=pre, postprocessor=post, device=dev)
