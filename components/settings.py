"""Typed settings: ``params.yaml`` read once, at the entry point, into frozen objects.

Each block of ``params.yaml`` is one stage's settings (the DVC ``example-get-started``
layout), so that DVC can track exactly the keys a stage reads. Unknown keys and bad values
are errors that name the key, because a typo in a knob that silently keeps its default is
the most expensive kind of bug in a pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components import labels

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSettings(_Block):
    """The built-in synthetic dataset, for users (and tests) without a download."""

    out_dir: Path = Path("data/sample")
    seed: int = 2018
    images_per_class: Annotated[int, Field(ge=3)] = 300
    usage_fractions: dict[Literal["Training", "PublicTest", "PrivateTest"], Fraction] = {
        "Training": 0.8,
        "PublicTest": 0.1,
        "PrivateTest": 0.1,
    }
    ckplus_subjects: Annotated[int, Field(ge=1)] = 10
    ckplus_frames: Annotated[int, Field(ge=2)] = 6

    @field_validator("usage_fractions")
    @classmethod
    def _sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {sum(value.values()):.3f}")
        return value


class IngestSettings(_Block):
    """Where the raw files are and how their splits map onto train/val/test."""

    fer2013: Path = Path("data/sample/fer2013.csv")
    ckplus: Path = Path("data/sample/ckplus48")
    out_dir: Path = Path("data/interim")
    usage_splits: dict[str, Literal["train", "val", "test"]] = {
        "Training": "train",
        "PublicTest": "val",
        "PrivateTest": "test",
    }
    # Used only when the csv has no PrivateTest rows: PublicTest becomes test and val is
    # carved out of Training, stratified by class.
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    ckplus_peak_frames: Annotated[int, Field(ge=1)] = 3
    ckplus_first_frame_neutral: bool = True
    ckplus_split_fractions: dict[Literal["train", "val", "test"], Fraction] = {
        "train": 0.7,
        "val": 0.15,
        "test": 0.15,
    }
    seed: int = 2018


class ValidateSettings(_Block):
    """Expectations on the ingested data; errors stop the pipeline."""

    out_dir: Path = Path("reports/validation")
    required_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    pixel_mean_range: tuple[float, float] = (5.0, 250.0)


class PreprocessSettings(_Block):
    """TFRecord sharding."""

    out_dir: Path = Path("data/processed")
    examples_per_shard: Annotated[int, Field(ge=1)] = 5000


class AugmentSettings(_Block):
    """On-the-fly tf.image augmentation amounts, applied to training batches only."""

    flip: bool = True
    max_rotation_deg: Annotated[float, Field(ge=0, le=45)] = 10.0
    max_zoom: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    max_brightness: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    contrast_range: tuple[float, float] = (0.9, 1.1)
    grid_png: Path = Path("reports/augmentation_grid.png")


class TrainSettings(_Block):
    """One model: an architecture on an emotion set."""

    architecture: Literal["convnn"] = "convnn"
    emotions: tuple[str, ...] = tuple(labels.FER2013_CODES.values())
    dataset: str = "fer2013"
    epochs: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 64
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    dense_units: Annotated[int, Field(ge=1)] = 64
    seed: int = 2018
    deterministic: bool = True
    out_dir: Path = Path("models")

    @field_validator("emotions", mode="before")
    @classmethod
    def _canonical(cls, value: list[str]) -> tuple[str, ...]:
        return labels.emotion_set(value)


class EvaluateSettings(_Block):
    """Which datasets a model is scored on."""

    in_dataset: str = "fer2013"
    in_split: Literal["train", "val", "test"] = "test"
    cross_dataset: str = "ckplus"
    cross_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    out_dir: Path = Path("reports/evaluation")
    batch_size: Annotated[int, Field(ge=1)] = 256


class PromoteSettings(_Block):
    """The gate and the registry name; a threshold is a metric key and its lower bound."""

    model_name: str = "emoflow-fer"
    thresholds: dict[str, float] = {"fer2013.accuracy": 0.9}
    alias: str = "champion"
    report: Path = Path("reports/promotion.json")


class MlflowSettings(_Block):
    """Tracking store; ``MLFLOW_TRACKING_URI`` in the environment wins over this."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "emoflow"


class Params(_Block):
    """Everything in ``params.yaml``."""

    sample: SampleSettings = SampleSettings()
    ingest: IngestSettings = IngestSettings()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    preprocess: PreprocessSettings = PreprocessSettings()
    augment: AugmentSettings = AugmentSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    promote: PromoteSettings = PromoteSettings()
    mlflow: MlflowSettings = MlflowSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ParamsError(ValueError):
    """``params.yaml`` is missing, not YAML, or holds an unknown key or a bad value."""


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and check ``params.yaml``; every problem is reported with its dotted key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ParamsError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage blocks, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = [
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        ]
        raise ParamsError(f"{path}: invalid settings\n" + "\n".join(problems)) from None
