"""Typed configuration: YAML files merged over dataclass defaults, then dotted command-line overrides.

    cfg = load_config("configs/deepfashion.yaml", ["train.batch_size=8", "model.generator.variant=baseline"])

A YAML file may name a `base:` file (relative to itself) whose values it overrides, so the ablation configs
only state what differs from the full model. Every key must exist in the dataclasses below and every value
must have the declared type: a typo is an error naming the key and the file, never a silently ignored
setting. A key given twice in one mapping (YAML would keep the last without a word) and YAML aliases (`*name`:
a few hundred bytes of nested aliases expand to gigabytes) are refused, naming the file and line; the values
in error messages are shortened. The network-shaping values are checked against each other and the image size
(`validate`), so a config that loads builds networks that run. The resolved config is what a run saves
(`save_config`) and what a checkpoint carries.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from utils.errors import InputError
from utils.io import write_text


class ConfigError(InputError):
    """A config file or override that does not fit the schema."""


# --------------------------------------------------------------------------------------------- schema

# Keys with a fixed set of values are typed as Literal: a value outside it is an error naming the key, the value
# and the allowed values, at load time.
Norm = Literal["batch", "instance", "none"]  # none: no normalisation layer at all (and a bias in the conv)
GeneratorVariant = Literal["full", "baseline", "baseline_s", "ours_spade", "ours_cc", "patn_s", "sean", "release"]
VGGLayer = Literal["relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu3_4",
                   "relu4_1", "relu4_2", "relu4_3", "relu4_4", "relu5_1", "relu5_2", "relu5_3", "relu5_4"]


@dataclass
class DataConfig:
    name: str = "synthetic"  # deepfashion | market | synthetic | synthetic_market: picks metric defaults
    root: str = "datasets/synthetic"
    image_size: tuple[int, int] = (256, 176)  # (H, W) of every image on disk
    train_dir: str = "train"
    test_dir: str = "test"
    annotation_train: str = "fasion-resize-annotation-train.csv"  # sic: the release's spelling
    annotation_test: str = "fasion-resize-annotation-test.csv"
    pairs_train: str = "fasion-resize-pairs-train.csv"
    pairs_test: str = "fasion-resize-pairs-test.csv"
    parsing_suffix: str = "_parsing"  # parsing maps live in <split_dir><suffix>/<stem>.png
    flow_suffix: str = "_flow"  # flow targets live in <split_dir><suffix>/<from>___<to>.npz
    # stage 0's training pairs: files (the pairs CSV and its flow files) | rendered (a synthetic dataset's
    # training people in two fresh poses per pair, drawn by the renderer on the fly: data.flow_pairs)
    flow_pairs: Literal["files", "rendered"] = "files"
    rendered_pairs: int = 1_000_000  # flow_pairs=rendered: distinct pairs, one epoch
    label_merge: str | list[int] = "cihp20"  # a preset name from data.parsing.PRESET_MERGES or a list
    num_workers: int = 2
    hflip_prob: float = 0.0  # training-time augmentation, off as in the paper
    target_augment: bool = False  # the release's Market recipe: random shift/scale of the training target
    aug_scale: float = 1.2  # target_augment: scale drawn in [1/aug_scale, aug_scale]
    aug_shift: tuple[int, int] = (10, 10)  # target_augment: shift (y, x) drawn in [-s, s) pixels
    parsing_dir: str | None = None  # the release's layout: every parsing map in <root>/<parsing_dir>/<stem>.png
    pair_parsing_dir: str | None = None  # target maps per pair, <root>/<dir>/<from>___<to>.png (release Market)
    max_train_pairs: int | None = None  # cap for quick runs; None = all pairs
    max_test_pairs: int | None = None
    val_pairs: int = 64  # fixed subset of the test pairs used for validation during training
    keypoint_margin: float = 0.5  # a present joint may lie this fraction of the side beyond each border
    invalid_poses: Literal["refuse", "skip"] = "refuse"  # pairs whose pose has < 4 joints or no torso


@dataclass
class PoseConfig:
    heatmap: Literal["gaussian", "binary"] = "gaussian"  # gaussian (PATN, sigma 6) | binary (authors' code, r 8)
    sigma: float = 6.0
    radius: float = 8.0
    kappa: float = -0.1  # distance map M = exp(kappa * d), paper eq. 3
    learnable_kappa: bool = False  # the authors' code learns kappa; the paper fixes it
    limbs: bool = True  # the 12 limb distance maps after the 18 joint maps; false: joints only (the release)
    encode_on_device: bool = False  # loader ships keypoints only; maps are computed on the training device


@dataclass
class SPATNConfig:
    input: Literal["parsing", "image"] = "parsing"  # parsing (SPATN) | image (SPATN*, for Market-1501)
    ngf: int = 64
    n_blocks: int = 9
    n_downsampling: int = 2
    norm: Norm = "batch"


@dataclass
class FlowConfig:
    source: Literal["net", "files"] = "net"  # net (FlowNet, frozen in the joint stage) | files (flow on disk)
    network: Literal["flownet", "release"] = "flownet"  # ours | Intr-Flow's FlowUnet_v2 (models.release_flow)
    checkpoint: str | None = None  # FlowNet weights for the joint stage (a stage-0 run's checkpoint)
    base_channels: int = 32
    max_channels: int = 256
    n_scales: int = 5
    flow_scale: float = 20.0  # network output x 20, as Intr-Flow
    norm: Norm = "batch"
    start_scale: int = 2  # network release only: the finest prediction is at H / start_scale
    # beyond the paper (flownet only): the full-resolution flow is a per-pixel choice between the regressed flow
    # and candidate flows computed from the keypoints, each limb's similarity map and the torso's affine one
    # (models.flow.limb_flows)
    limb_flows: bool = False


@dataclass
class GeneratorConfig:
    variant: GeneratorVariant = "full"  # models.variants.GENERATORS
    base_channels: int = 32
    max_channels: int = 128
    n_scales: int | None = None  # None: floor(log2(H / 4)) + 1, i.e. 7 at 256 px
    n_res_blocks: int = 2
    n_warp_scales: int = 5
    style_dim: int = 128
    norm_hidden: int = 64  # hidden width of SEAN/SPADE/CC's parsing branch (64: SPADE and the authors)
    # variant release only (models.release_generator): SEAN kernel 5 (DeepFashion) / 3 (Market), SEAN after
    # each upsampling (Market), per-pixel noise in every SEAN layer (training and test, as the release)
    sean_kernel: int = 5
    sean_after_upsample: bool = False
    noise: bool = True


@dataclass
class DiscriminatorConfig:
    ndf: int = 64
    n_layers: int = 3
    norm: Norm = "instance"


@dataclass
class ModelConfig:
    spatn: SPATNConfig = field(default_factory=SPATNConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # default (PyTorch's) | kaiming (the release's scheme on the generator and discriminator, models.init)
    init: Literal["default", "kaiming"] = "default"


@dataclass
class LossWeights:
    """The lambda of each loss term, by the name the loss returns it under (paper 4.1): the training loop sums
    weight x term over the terms a stage computes, so a new loss is one field here and one term in its stage."""

    ce: float = 10.0  # SPATN's parsing cross-entropy
    l1: float = 1.0
    perceptual: float = 1.0
    adversarial: float = 0.01
    flow_epe: float = 1.0  # stage 0 (flow module)
    visibility: float = 1.0


@dataclass
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    gan_mode: Literal["vanilla", "lsgan", "hinge"] = "vanilla"
    perceptual_weights: str = "imagenet"  # imagenet (torch hub cache) | a path | random (offline tests only)
    perceptual_layers: list[VGGLayer] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    perceptual_distance: Literal["mse", "l1"] = "mse"  # mse (paper eq. 10) | l1 (the release)
    perceptual_layer_weights: list[float] | None = None  # one per layer; None: 1 each (the release: 0.125)
    d_scale: float = 1.0  # D minimises d_scale * (d_real + d_fake); the release: 0.01 x 0.5
    # SPATN's cross-entropy per class: none (paper eq. 8) | inverse_sqrt_frequency (thin parts weigh more;
    # the frequencies are counted over the training split's target parsing maps at start)
    ce_class_weights: Literal["none", "inverse_sqrt_frequency"] = "none"
    # stage 0's flow targets at the coarse scales (losses.flow): all_valid (a cell only when every pixel under
    # it is visible) | valid_mean (every cell with a visible pixel, on their mean flow, weighted by their share)
    flow_coarse: Literal["all_valid", "valid_mean"] = "all_valid"
    # stage 0's visibility cross-entropy per class (visible, invisible, background); None: 1 each. The
    # background is most of an image, so unweighted the thin classes lose: the generator then drops the warped
    # source wherever visible body is called background
    visibility_class_weights: tuple[float, float, float] | None = None


@dataclass
class TrainConfig:
    stage: Literal["joint", "flow"] = "joint"  # joint (SPATN + SPGNet + D) | flow (stage 0: the flow module)
    name: str | None = None  # run folder runs/<NNNNN>-<name>; None: the config file's stem
    run_dir: str = "runs"
    batch_size: int = 4
    max_steps: int = 200_000
    max_minutes: float | None = None  # wall-clock budget; the run checkpoints and stops when spent
    lr: float = 2e-4  # both stages
    lr_d: float = 2e-5
    weight_decay_d: float = 0.0  # Adam's L2 weight decay on D (the release: 4e-4)
    # plateau: x lr_factor on a validation plateau (paper) | constant | linear: constant, then linearly to zero
    # from the fraction lr_decay_from of the run (pix2pix / PATN's niter + niter_decay); the run's progress is
    # step / max_steps or, under max_minutes, this invocation's minutes / max_minutes, whichever is further
    lr_schedule: Literal["plateau", "constant", "linear"] = "plateau"
    lr_decay_from: float = 0.5
    betas: tuple[float, float] = (0.5, 0.999)
    adv_start_step: int = 0  # adversarial term switched on after this warm-up
    lr_patience: int = 3  # validations without improvement before lr x lr_factor
    lr_factor: float = 0.5
    log_every: int = 50
    val_every: int = 2000
    ckpt_every: int = 2000
    keep_checkpoints: int = 3
    seed: int = 0
    # mixed precision; auto: bf16 where the device computes it natively (AMX, AVX-512 BF16, Ampere+), else off
    amp: Literal["off", "bf16", "fp16", "auto"] = "off"
    channels_last: bool = False
    compile: bool = False
    # joint stage: keep the frozen flow module's output for each training pair in host memory, up to this many
    # MiB, so a pair seen again skips the module (training.flow_cache); 0: off. Exact only when a pair's inputs
    # never change: refused with augmentation or a learnable kappa
    flow_cache_mb: float = 0.0
    nonfinite: Literal["stop", "skip"] = "stop"  # what a NaN/inf loss does
    max_consecutive_skips: int = 20  # nonfinite=skip: this many skipped steps in a row stop the run
    grad_clip: float | None = None
    # under torchrun: how long a process waits in a collective (an all-reduce, a broadcast) for the others before
    # the run fails, e.g. when another node died; None: torch's default. Longer than rank 0's validation.
    dist_timeout_minutes: float | None = None


@dataclass
class TestConfig:
    batch_size: int = 8


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)


# ------------------------------------------------------------------------------------------ merging

_SHORT = reprlib.Repr()  # repr that elides: a value in a message stays a few dozen characters, whatever its size
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def shown(value: Any) -> str:
    """`repr(value)` shortened for an error message (reprlib: long strings and deep or long lists elided)."""
    return _SHORT.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, origin: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where YAML cannot express the type."""
    kind = typing.get_origin(tp)
    if kind in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, origin)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{origin}: key '{key}' = {shown(value)} does not have the type {_type_name(tp)}")
    if kind is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{origin}: key '{key}' = {shown(value)} is not one of {', '.join(map(str, choices))}")
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{origin}: key '{key}' must be null, got {shown(value)}")
    if kind in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: key '{key}' must be a list, got {shown(value)}")
        args = typing.get_args(tp)
        if kind is tuple:
            if len(value) != len(args):
                raise ConfigError(f"{origin}: key '{key}' must have {len(args)} entries, got {shown(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]", origin) for i, (v, a) in enumerate(zip(value, args)))
        return [_coerce(v, args[0], f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: key '{key}' must be a number, got {shown(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: key '{key}' must be an integer, got {shown(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{origin}: key '{key}' must be a {tp.__name__}, got {shown(value)}")
        return value
    raise ConfigError(f"{origin}: key '{key}' has an unsupported type {tp}")  # pragma: no cover


def _merge(node: Any, updates: dict, prefix: str, origin: str) -> None:
    """Write `updates` into the dataclass instance `node` in place, checking keys and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{origin}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {shown(updates)}")
    hints = typing.get_type_hints(type(node))
    for key, value in updates.items():
        dotted = prefix + shown(key).strip("'")
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{origin}: unknown key '{dotted}' (known keys here: {known})")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, dotted + ".", origin)
        else:
            setattr(node, key, _coerce(value, hints[key], dotted, origin))


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also refuses a key given twice in one mapping and any alias (module docstring)."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias '*{event.anchor[:40]}': configs take no YAML aliases (write the value "
                "out; 'base:' shares settings between files)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value[:80]}' is given twice in one mapping (first on "
                        f"line {first[key_node.value]}); YAML would keep the last one without a word",
                        key_node.start_mark)
                first[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str, origin: str) -> Any:
    """Parse a config's YAML text with _ConfigLoader; any problem is one ConfigError line '<origin>:LINE:COL: ...'
    (PyYAML's own message spans several lines, with the context and a caret)."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        kind = "" if isinstance(err, (yaml.composer.ComposerError, yaml.constructor.ConstructorError)) else \
            "not valid YAML: "
        raise ConfigError(f"{where}: {kind}{problem[:200]}") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The chain of (mapping, origin) from the outermost `base:` file to `path` itself."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from err
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    chain = []
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: key 'base' = {shown(base)} must name one config file (a string, relative to "
                              "this file)")
        chain = _read_yaml(path.parent / base, seen + (path,))
    return chain + [(data, str(path))]


def parse_override(text: str) -> dict:
    """'train.batch_size=8' -> {'train': {'batch_size': 8}}; the value is parsed as YAML (quote a string that YAML
    would read otherwise: train.name='@run1')."""
    if "=" not in text:
        raise ConfigError(f"command line: override {shown(text)} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw, f"command line override {shown(text)}") if raw.strip() else None
    except ConfigError as err:
        raise ConfigError(f"{err} (quote a string value: {key.strip()[:80]}='...')") from None
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML chain (base files first) <- dotted overrides, validated key by key."""
    cfg = Config()
    if path is not None:
        for data, origin in _read_yaml(Path(path)):
            _merge(cfg, data, "", origin)
    for text in overrides:
        _merge(cfg, parse_override(text), "", f"command line override {shown(text)}")
    validate(cfg)
    return cfg


def config_from_dict(data: dict, origin: str = "<dict>") -> Config:
    """Rebuild a Config from `to_dict` output (a checkpoint's or a run folder's copy)."""
    cfg = Config()
    _merge(cfg, data, "", origin)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Value checks the types cannot express, all at load time (before a run folder exists)."""
    h, w = cfg.data.image_size
    if h % 4 or w % 4 or h <= 0 or w <= 0:
        raise ConfigError(f"key 'data.image_size' = {list(cfg.data.image_size)}: both sides must be positive "
                          "multiples of 4")
    if cfg.pose.kappa >= 0:
        raise ConfigError(f"key 'pose.kappa' = {cfg.pose.kappa} must be negative (paper eq. 3)")
    t = cfg.train
    positive = {"train.batch_size": t.batch_size, "train.max_steps": t.max_steps, "train.log_every": t.log_every,
                "train.val_every": t.val_every, "train.ckpt_every": t.ckpt_every,
                "train.keep_checkpoints": t.keep_checkpoints, "train.lr": t.lr, "train.lr_d": t.lr_d,
                "train.max_consecutive_skips": t.max_consecutive_skips, "test.batch_size": cfg.test.batch_size,
                "data.val_pairs": cfg.data.val_pairs, "train.lr_factor": t.lr_factor}
    optional = {"train.max_minutes": t.max_minutes, "train.grad_clip": t.grad_clip,
                "train.dist_timeout_minutes": t.dist_timeout_minutes,
                "data.max_train_pairs": cfg.data.max_train_pairs, "data.max_test_pairs": cfg.data.max_test_pairs}
    for key, value in {**positive, **{k: v for k, v in optional.items() if v is not None}}.items():
        if not value > 0:
            raise ConfigError(f"key '{key}' = {value!r} must be positive")
    if not t.lr_factor < 1:
        raise ConfigError(f"key 'train.lr_factor' = {t.lr_factor} must be below 1 (it lowers the learning rate)")
    if not 0 <= t.lr_decay_from < 1:
        raise ConfigError(f"key 'train.lr_decay_from' = {t.lr_decay_from} must lie in [0, 1) (a fraction of the run)")
    if not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"key 'train.betas' = {list(t.betas)}: Adam's betas lie in [0, 1)")
    for key, value in {"data.num_workers": cfg.data.num_workers, "train.adv_start_step": t.adv_start_step,
                       "train.lr_patience": t.lr_patience}.items():
        if value < 0:
            raise ConfigError(f"key '{key}' = {value} must not be negative")
    if cfg.data.keypoint_margin < 0:
        raise ConfigError(f"key 'data.keypoint_margin' = {cfg.data.keypoint_margin} must not be negative")
    if not 0 <= cfg.data.hflip_prob <= 1:
        raise ConfigError(f"key 'data.hflip_prob' = {cfg.data.hflip_prob} must lie in [0, 1]")
    weights = dataclasses.asdict(cfg.loss.weights)
    if any(v < 0 for v in weights.values()):
        bad = [k for k, v in weights.items() if v < 0]
        raise ConfigError(f"key 'loss.weights.{bad[0]}' = {weights[bad[0]]} must not be negative")
    if not cfg.loss.perceptual_layers:
        raise ConfigError("key 'loss.perceptual_layers' is empty: name at least one VGG19 layer")
    layer_weights = cfg.loss.perceptual_layer_weights
    if layer_weights is not None and len(layer_weights) != len(cfg.loss.perceptual_layers):
        raise ConfigError(f"key 'loss.perceptual_layer_weights' has {len(layer_weights)} values for "
                          f"{len(cfg.loss.perceptual_layers)} loss.perceptual_layers")
    if cfg.loss.visibility_class_weights is not None and min(cfg.loss.visibility_class_weights) <= 0:
        raise ConfigError(f"key 'loss.visibility_class_weights' = {list(cfg.loss.visibility_class_weights)} must "
                          "be positive")
    for key, value in {"loss.d_scale": cfg.loss.d_scale, "train.weight_decay_d": t.weight_decay_d}.items():
        if value < 0:
            raise ConfigError(f"key '{key}' = {value} must not be negative")
    f = cfg.model.flow
    if f.network != "release" and f.start_scale != FlowConfig.start_scale:
        raise ConfigError(f"key 'model.flow.start_scale' = {f.start_scale} applies to model.flow.network = "
                          "'release' only: leave it at its default, or it would be ignored")
    if f.network == "release" and f.limb_flows:
        raise ConfigError("key 'model.flow.limb_flows' = true applies to model.flow.network = 'flownet' only: the "
                          "release flow network reads the pose maps alone")
    if f.network == "release" and f.norm != "batch":
        raise ConfigError(f"key 'model.flow.norm' = {f.norm!r}: the release flow network has batch norm")
    if not cfg.pose.limbs and cfg.pose.learnable_kappa:
        raise ConfigError("key 'pose.learnable_kappa' = true needs the limb maps it scales (pose.limbs = true)")
    if cfg.data.target_augment and cfg.model.flow.source == "files":
        raise ConfigError("key 'data.target_augment' = true moves the target but not its flow file: it needs "
                          "model.flow.source = net")
    validate_flow_cache(cfg)
    if cfg.data.aug_scale < 1:
        raise ConfigError(f"key 'data.aug_scale' = {cfg.data.aug_scale} must be >= 1")
    if any(s < 0 for s in cfg.data.aug_shift):
        raise ConfigError(f"key 'data.aug_shift' = {list(cfg.data.aug_shift)} must not be negative")
    if not cfg.data.target_augment and (cfg.data.aug_scale, tuple(cfg.data.aug_shift)) != (1.2, (10, 10)):
        raise ConfigError("keys 'data.aug_scale' / 'data.aug_shift' apply with data.target_augment = true only: "
                          "leave them at their defaults, or they would be ignored")
    validate_networks(cfg)


def validate_flow_cache(cfg: Config) -> None:
    """train.flow_cache_mb: a pair's cached flow is only right while the flow module's inputs for that pair are the
    same at every visit, and there must be a flow module to cache."""
    mb = cfg.train.flow_cache_mb
    if mb < 0:
        raise ConfigError(f"key 'train.flow_cache_mb' = {mb} must not be negative")
    if mb == 0:
        return
    changing = {"data.hflip_prob": cfg.data.hflip_prob > 0, "data.target_augment": cfg.data.target_augment,
                "pose.learnable_kappa": cfg.pose.learnable_kappa}
    for key, on in changing.items():
        if on:
            raise ConfigError(f"key 'train.flow_cache_mb' = {mb:g}: {key} changes a pair's flow between visits, so "
                              "a cached one would be stale; set train.flow_cache_mb = 0")
    if cfg.model.flow.source == "files":
        raise ConfigError(f"key 'train.flow_cache_mb' = {mb:g} caches the flow module's output, and "
                          "model.flow.source = files runs none: set train.flow_cache_mb = 0")


def validate_networks(cfg: Config) -> None:
    """The network-shaping values: widths and counts in range, and the downsampling steps within what
    data.image_size allows; a value out of range would otherwise fail in the first step, after the run folder
    exists. (model.generator.n_scales against the image size: models.variants.build_generator.)"""
    m, p = cfg.model, cfg.pose
    at_least = {
        1: {"model.spatn.ngf": m.spatn.ngf, "model.flow.base_channels": m.flow.base_channels,
            "model.flow.max_channels": m.flow.max_channels, "model.flow.n_scales": m.flow.n_scales,
            "model.flow.start_scale": m.flow.start_scale,
            "model.generator.base_channels": m.generator.base_channels,
            "model.generator.max_channels": m.generator.max_channels,
            "model.generator.style_dim": m.generator.style_dim,
            "model.generator.norm_hidden": m.generator.norm_hidden,
            "model.generator.sean_kernel": m.generator.sean_kernel,
            "model.discriminator.ndf": m.discriminator.ndf, "model.discriminator.n_layers": m.discriminator.n_layers},
        0: {"model.spatn.n_blocks": m.spatn.n_blocks, "model.spatn.n_downsampling": m.spatn.n_downsampling,
            "model.generator.n_res_blocks": m.generator.n_res_blocks,
            "model.generator.n_warp_scales": m.generator.n_warp_scales},
    }
    for low, values in at_least.items():
        for key, value in values.items():
            if value < low:
                raise ConfigError(f"key '{key}' = {value} must be at least {low}")
    positive = {"pose.sigma": p.sigma, "pose.radius": p.radius, "model.flow.flow_scale": m.flow.flow_scale}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"key '{key}' = {value} must be positive")
    if m.generator.sean_kernel % 2 == 0:
        raise ConfigError(f"key 'model.generator.sean_kernel' = {m.generator.sean_kernel} must be odd (a centred "
                          "convolution keeps the map's size)")
    if m.flow.start_scale & (m.flow.start_scale - 1):
        raise ConfigError(f"key 'model.flow.start_scale' = {m.flow.start_scale} must be a power of two")
    h, w = cfg.data.image_size
    factor = 2**m.spatn.n_downsampling
    if h % factor or w % factor:
        raise ConfigError(f"key 'model.spatn.n_downsampling' = {m.spatn.n_downsampling} does not fit data.image_size "
                          f"{h}x{w}: SPATN halves both sides that often, so they must be multiples of {factor}")
    patches = min(h, w) // 2**m.discriminator.n_layers  # the PatchGAN's last 4x4 convs take 3 px of it
    if patches < 3:
        raise ConfigError(f"key 'model.discriminator.n_layers' = {m.discriminator.n_layers} does not fit "
                          f"data.image_size {h}x{w}: {m.discriminator.n_layers} halvings leave {patches} px, the "
                          "discriminator's last convolutions need 3")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON and checkpoints."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences_from_defaults(cfg: Config) -> list[tuple[str, Any, Any]]:
    """(dotted key, default, value) for every setting of `cfg` that differs from the dataclass defaults, in
    schema order: what the YAML chain and the overrides changed (a value set to its default is not listed)."""
    defaults, values = flatten(to_dict(Config())), flatten(to_dict(cfg))
    return [(key, defaults[key], value) for key, value in values.items() if value != defaults[key]]


# Keys that decide the shapes of the saved networks: a checkpoint is only loadable where these agree.
ARCHITECTURE_KEYS = ("data.image_size", "data.label_merge", "pose.learnable_kappa", "pose.limbs", "model")


# What a resumed run takes from its checkpoint whatever its config says: the optimizers' state (learning rates,
# betas and decay live in their param groups, the plateau schedule's patience and factor in its state) and the
# data order (the sampler's seed, and its position counted in batches of train.batch_size).
RESUME_KEYS = ("train.lr", "train.lr_d", "train.weight_decay_d", "train.betas", "train.lr_schedule",
               "train.lr_patience", "train.lr_factor", "train.seed", "train.batch_size")


def resume_mismatches(saved: dict, current: Config) -> list[str]:
    """'key: saved -> current' for every RESUME_KEYS key on which a checkpoint's config differs: a run resumed with
    them would say one value in its config.yaml and run with the other."""
    old, new = flatten(saved), flatten(to_dict(current))
    return [f"{k}: {shown(old.get(k))} -> {shown(new.get(k))}" for k in RESUME_KEYS if old.get(k) != new.get(k)]


def architecture_mismatches(saved: dict, current: Config) -> list[str]:
    """'key: saved -> current' for every architecture key on which a checkpoint's config differs."""
    # a key the saved config lacks is newer than the checkpoint: it was trained with that key's default
    old, new = {**flatten(to_dict(Config())), **flatten(saved)}, flatten(to_dict(current))
    keys = sorted(k for k in set(old) | set(new) if any(k == a or k.startswith(a + ".") for a in ARCHITECTURE_KEYS))
    # where the frozen flow comes from, the initialisation and the release generator's noise switch: not shapes
    ignore = {"model.flow.checkpoint", "model.flow.source", "model.init", "model.generator.noise"}
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if k not in ignore and old.get(k) != new.get(k)]
