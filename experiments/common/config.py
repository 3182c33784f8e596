"""Experiment configuration: frozen dataclasses filled by gin, and the command-line glue.

gin is confined to ``experiments/`` (``lossjax`` never imports it). Four dataclasses are
registered under short selectors, so a ``.gin`` file reads::

    data.dataset = 'cifar10'
    data.batch_size = 256
    model.name = 'wrn28_10'
    optim.name = 'aace_sam'
    optim.rho = 0.2
    train.epochs = 200

and ``--config.<selector>.<param>=<value>`` on the command line becomes the gin binding
``<selector>.<param> = <value>`` (values are gin literals; a bare word that is not a gin literal
is taken as a string, so ``--config.optim.name=sam`` works). Each dataclass validates itself in
``__post_init__`` and names the offending field. Everything downstream receives an
:class:`ExperimentConfig`, never gin.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import tokenize
from collections.abc import Callable, Sequence
from typing import Any

import gin

from experiments.common.augment import AugmentConfig
from experiments.common.data import DATASETS
from experiments.common.models import ModelConfig
from experiments.common.typecheck import check_field_types

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OPTIMIZERS",
    "parse_config",
    "parse_gin_config",
    "split_overrides",
    "make_config",
]

OPTIMIZERS = ("sgd", "sam", "asam", "aace_sam", "gsam", "saf", "mesa")
SCHEDULES = ("step", "cosine", "constant")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Data and augmentation (gin selector ``data``).

    Attributes:
      dataset: one of ``digits`` (embedded), ``cifar10``, ``cifar100``, ``fashion_mnist``,
        ``synthetic`` (tests).
      data_dir: local dataset directory (``--data_dir`` overrides it); never downloads.
      batch_size: global training batch (divided over all local devices).
      eval_batch_size: evaluation batch (0 = ``batch_size``).
      crop_pad, flip, cutout, cutout_p, pad_mode: augmentation (see ``AugmentConfig``).
      n_train, n_test: keep only the first n examples (0 = all), for quick runs.
    """

    dataset: str = "digits"
    data_dir: str = ""
    batch_size: int = 64
    eval_batch_size: int = 0
    crop_pad: int = 0
    flip: bool = False
    cutout: int = 0
    cutout_p: float = 0.5
    pad_mode: str = "reflect"
    n_train: int = 0
    n_test: int = 0

    def __post_init__(self) -> None:
        check_field_types(self, 'data')
        if self.dataset not in DATASETS:
            raise ValueError(f"`data.dataset` must be one of {DATASETS}, got {self.dataset!r}.")
        if self.batch_size < 1:
            raise ValueError(f"`data.batch_size` must be >= 1, got {self.batch_size}.")
        if self.eval_batch_size < 0:
            raise ValueError(f"`data.eval_batch_size` must be >= 0, got {self.eval_batch_size}.")
        if self.n_train < 0 or self.n_test < 0:
            raise ValueError("`data.n_train` and `data.n_test` must be >= 0.")
        self.augment  # validates the augmentation fields  # noqa: B018

    @property
    def augment(self) -> AugmentConfig:
        try:
            return AugmentConfig(self.crop_pad, self.flip, self.cutout, self.cutout_p, self.pad_mode)
        except ValueError as e:
            raise ValueError(f"data: {e}".replace("`", "`data.", 1)) from None


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer (gin selector ``optim``). The chain is
    ``chain(<sharpness transform>, [clip], add_decayed_weights(wd), sgd(schedule, momentum))``
    (MESA is placed last, as it must see the new parameters).

    Attributes:
      name: ``sgd``, ``sam``, ``asam``, ``aace_sam``, ``gsam``, ``saf`` or ``mesa``.
      learning_rate: peak learning rate.
      momentum, nesterov: SGD momentum (0.9, no Nesterov in the AACE/DAV recipes).
      weight_decay: coupled (PyTorch-style) decay added to the gradient before momentum,
        evaluated at the unperturbed weights, on all parameters.
      schedule: ``step`` (×``step_factor`` at ``step_milestones`` fractions of training),
        ``cosine`` or ``constant``; applied per step.
      warmup_epochs: linear warm-up (0 = none).
      label_smoothing: ε of the training CE (both SAM passes use it; AACE's ascent loss
        doesn't).
      clip_norm: global-norm clipping of the final gradient (0 = off).
      rho: SAM-family radius (SAM 0.05/0.1, ASAM 0.5/1.0, AACE 0.2 un-normalised).
      normalize: AACE-SAM only: divide the perturbation by ‖∇AACE‖ (official default False).
      eta: ASAM's η.
      group_size: m-sharpness group size m (0 = the whole batch); SAM/ASAM/AACE-SAM only.
      gsam_alpha, gsam_rho_min: GSAM α and ρ_min (ρ_max = ``rho``; ρ follows the LR).
      saf_lam, saf_tau, saf_delay, saf_start, saf_end: SAF/MESA λ, τ, Ẽ (SAF), strict gate
        ``start < epoch < end`` (end 0 = none).
      mesa_decay: EMA decay β of MESA's teacher.
      aace_mode, aace_th: AACE target mode ('ada' | 'rand' | 'const') and threshold.
    """

    name: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "step"
    step_milestones: tuple = (0.3, 0.6, 0.8)
    step_factor: float = 0.2
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    clip_norm: float = 0.0
    rho: float = 0.05
    normalize: bool = False
    eta: float = 0.01
    group_size: int = 0
    gsam_alpha: float = 0.4
    gsam_rho_min: float = 0.0
    saf_lam: float = 0.3
    saf_tau: float = 5.0
    saf_delay: int = 3
    saf_start: int = 5
    saf_end: int = 0
    mesa_decay: float = 0.9998
    aace_mode: str = "ada"
    aace_th: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self, 'optim')
        if self.name not in OPTIMIZERS:
            raise ValueError(f"`optim.name` must be one of {OPTIMIZERS}, got {self.name!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`optim.schedule` must be one of {SCHEDULES}, got {self.schedule!r}.")
        for f in ("learning_rate", "weight_decay", "rho", "eta", "label_smoothing", "clip_norm", "saf_lam"):
            if getattr(self, f) < 0:
                raise ValueError(f"`optim.{f}` must be >= 0, got {getattr(self, f)}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`optim.momentum` must lie in [0, 1), got {self.momentum}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"`optim.label_smoothing` must lie in [0, 1), got {self.label_smoothing}.")
        if not 0.0 < self.mesa_decay < 1.0:
            raise ValueError(f"`optim.mesa_decay` must lie in (0, 1), got {self.mesa_decay}.")
        if self.saf_tau <= 0:
            raise ValueError(f"`optim.saf_tau` must be > 0, got {self.saf_tau}.")
        if self.saf_delay < 1:
            raise ValueError(f"`optim.saf_delay` must be >= 1, got {self.saf_delay}.")
        if self.group_size < 0:
            raise ValueError(f"`optim.group_size` must be >= 0, got {self.group_size}.")
        if self.group_size and self.name not in ("sam", "asam", "aace_sam"):
            raise ValueError(f"`optim.group_size` (m-sharpness) applies to sam/asam/aace_sam, not {self.name!r}.")
        if self.aace_mode not in ("ada", "const"):
            raise ValueError(f"`optim.aace_mode` must be 'ada' or 'const' here, got {self.aace_mode!r}.")
        if self.step_factor <= 0 or any(not 0 < m < 1 for m in self.step_milestones):
            raise ValueError("`optim.step_milestones` must be fractions in (0, 1) and `optim.step_factor` > 0.")
        if self.warmup_epochs < 0:
            raise ValueError(f"`optim.warmup_epochs` must be >= 0, got {self.warmup_epochs}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings (gin selector ``train``).

    Attributes:
      epochs: number of epochs.
      seed: seed of initialisation, shuffling and augmentation.
      eval_every: evaluate on the test set every n epochs (and always at the last).
      checkpoint: write a checkpoint every epoch (and on Ctrl-C).
      progress: show a tqdm progress bar.
      plots: write PNG curves at the end.
      interrupt_after_steps: testing hook — raise KeyboardInterrupt after this many steps of
        this process (0 = never); exercises the Ctrl-C path.
    """

    epochs: int = 30
    seed: int = 0
    eval_every: int = 1
    checkpoint: bool = True
    progress: bool = True
    plots: bool = True
    interrupt_after_steps: int = 0

    def __post_init__(self) -> None:
        check_field_types(self, 'train')
        if self.epochs < 1:
            raise ValueError(f"`train.epochs` must be >= 1, got {self.epochs}.")
        if self.eval_every < 1:
            raise ValueError(f"`train.eval_every` must be >= 1, got {self.eval_every}.")
        if self.interrupt_after_steps < 0:
            raise ValueError("`train.interrupt_after_steps` must be >= 0.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole run: ``data``, ``model``, ``optim``, ``train``."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_GinData = gin.external_configurable(DataConfig, name="data")
_GinModel = gin.external_configurable(ModelConfig, name="model")
_GinOptim = gin.external_configurable(OptimConfig, name="optim")
_GinTrain = gin.external_configurable(TrainConfig, name="train")


def _gin_value(text: str) -> str:
    """Return ``text`` if it is a Python/gin literal or reference, else quote it as a string."""
    if text.startswith(("@", "%")) or text in ("True", "False", "None"):
        return text
    try:
        ast.literal_eval(text)
        return text
    except (ValueError, SyntaxError):
        return repr(text)


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``--config.<sel>.<param>=<value>`` arguments (returned as gin bindings) from the rest."""
    bindings, rest = [], []
    for a in argv:
        if a.startswith("--config.") and "=" in a:
            key, value = a[len("--config."):].split("=", 1)
            if key.count(".") < 1:
                raise ValueError(f"override {a!r}: expected --config.<selector>.<param>=<value>.")
            bindings.append(f"{key} = {_gin_value(value)}")
        else:
            rest.append(a)
    return bindings, rest


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _add_search_path() -> None:
    """Let ``include 'configs/...'`` resolve from any working directory.

    The repository root is put *first* among gin's search prefixes: gin 0.5.0 tries each prefix
    with a "python system path" reader that crashes (TypeError) on a relative path whose first
    component is a namespace package (``configs``) when the file is not under the current
    directory.
    """
    prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
    if isinstance(prefixes, list):
        if _REPO_ROOT not in prefixes:
            prefixes.insert(0, _REPO_ROOT)
    else:  # pragma: no cover - other gin versions
        gin.add_config_file_search_path(_REPO_ROOT)


def make_config() -> ExperimentConfig:
    """Build the :class:`ExperimentConfig` from the current gin bindings."""
    return ExperimentConfig(_GinData(), _GinModel(), _GinOptim(), _GinTrain())


def parse_gin_config(files: Sequence[str], bindings: Sequence[str], make: Callable[[], Any]) -> Any:
    """Parse gin ``files`` then ``bindings`` (later wins) and return ``make()``.

    ``make`` builds the result from the gin state: :func:`make_config` for the trainer, or a
    study's gin-configurable config class (``gin.external_configurable(MyConfig, name=...)``).
    ``include 'configs/...'`` resolves from any working directory.

    Raises:
      ValueError: a file cannot be read or is malformed (gin raises ``tokenize.TokenError``/
        ``SyntaxError``), or a file or binding names an unknown selector/parameter; the message
        names the file (or says it was an override).
    """
    gin.clear_config()
    _add_search_path()
    for f in files:
        try:
            gin.parse_config_file(f)
        except OSError as e:
            raise ValueError(f"config file {f}: cannot be read ({e}).") from e
        except (tokenize.TokenError, SyntaxError, ValueError, KeyError) as e:
            raise ValueError(f"config file {f}: {type(e).__name__}: {e}") from e
    try:
        gin.parse_config(list(bindings))
    except (tokenize.TokenError, SyntaxError, ValueError, KeyError) as e:
        raise ValueError(f"config override: {type(e).__name__}: {e}") from e
    return make()


def parse_config(files: Sequence[str] = (), bindings: Sequence[str] = ()) -> ExperimentConfig:
    """Parse gin ``files`` then ``bindings`` (later wins) into an :class:`ExperimentConfig`.

    Raises:
      ValueError: as :func:`parse_gin_config`.
    """
    return parse_gin_config(files, bindings, make_config)
