"""Typed settings: ``params.yaml`` read once, at the entry point, into frozen objects.

Each block of ``params.yaml`` is one stage's settings (the DVC ``example-get-started``
layout), so that DVC can track exactly the keys a stage reads. Unknown keys and bad values
are errors that name the key, because a typo in a knob that silently keeps its default is
the most expensive kind of bug in a pipeline.

Relative paths in the file (every ``Path`` setting, and the :data:`Location` strings: model
locations and a relative ``sqlite:///`` store) are relative to the file's folder, the
project root, where DVC runs every stage: ``emoflow predict -p /project/params.yaml`` from
another folder reads the project's store and models, not files of the working folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from emoflow.components import labels
from emoflow.components.errors import EmoFlowError
from emoflow.components.model_kinds import reads_sequences
from emoflow.components.store_location import SQLITE

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Location:
    """Marks a string setting that is a file path or a URI (relative paths are anchored)."""


class _OwnBlocks:
    """Marks a mapping whose values are partial blocks of the settings class that holds it."""


Location = Annotated[str, _Location()]


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
    """Where the raw files are and how their splits map onto train/val/test.

    The layout of each dataset is told by what its path holds: ``fer2013`` is a csv
    (``.csv``/``.csv.gz``) or a Kaggle image folder (``train|test/<class>/``); ``ckplus`` is
    the original distribution (it holds ``cohn-kanade-images/``) or the CK+48 class folders.
    """

    fer2013: Path = Path("data/sample/fer2013.csv")
    # FER+ crowd votes (fer2013new.csv), row-aligned with the fer2013 csv: when set, labels
    # are the FER+ majority vote and images without one are left out.
    ferplus: Path | None = None
    ferplus_soft_labels: bool = False
    ckplus: Path = Path("data/sample/ckplus48")
    out_dir: Path = Path("data/interim")
    # A malformed row or image stops ingest (error), or is left out and listed in
    # <out_dir>/quarantine.json (skip). A malformed or missing file always stops it.
    on_bad_record: Literal["error", "skip"] = "error"
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
    # Subject-grouped cross-validation folds of CK+ (the manifest's ``fold`` column).
    ckplus_folds: Annotated[int, Field(ge=2)] = 10
    # Original CK+ frames with no face found: stop (error) or crop a centred square.
    ckplus_no_face: Literal["error", "center_crop"] = "error"
    seed: int = 2018

    @model_validator(mode="after")
    def _soft_labels_need_votes(self) -> IngestSettings:
        if self.ferplus_soft_labels and self.ferplus is None:
            raise ValueError("ferplus_soft_labels needs ferplus: the path of fer2013new.csv")
        return self


Severity = Literal["error", "warning"]
# Every check of the validate stage (one or more expectations each) and what its failure does
# by default: an error stops the pipeline, a warning is reported and the pipeline carries on.
# Broken data is an error; the known faults of the public datasets (duplicates, blank images,
# class imbalance) are warnings, since the published splits are used as they are.
VALIDATION_SEVERITY: dict[str, Severity] = {
    "required_columns": "error",
    "unique_ids": "error",
    "dataset_name": "error",
    "label_domain": "error",
    "split_domain": "error",
    "required_splits": "error",
    "image_size": "error",
    "pixel_range": "error",
    "pixels_match_manifest": "error",
    "dataset_pixel_stats": "error",
    "image_pixel_stats": "warning",
    "blank_images": "warning",
    "class_balance": "warning",
    "duplicate_images": "warning",
    "duplicates_within_split": "warning",
    "duplicates_across_splits": "warning",
    "duplicate_label_conflicts": "warning",
    "subjects_across_splits": "error",
}


class ValidateSettings(_Block):
    """Expectations on the ingested data; checks of severity ``error`` stop the pipeline.

    The four ``*_range`` knobs are the built-in pixel statistics ranges, used unless
    ``reference`` names a JSON of ranges written from a good run
    (``components.validate.stage.write_reference``).
    """

    out_dir: Path = Path("reports/validation")
    required_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    pixel_mean_range: tuple[float, float] = (5.0, 250.0)
    pixel_std_range: tuple[float, float] = (0.5, 127.5)
    dataset_pixel_mean_range: tuple[float, float] = (40.0, 215.0)
    dataset_pixel_std_range: tuple[float, float] = (10.0, 100.0)
    reference: Path | None = None
    reference_margin: Annotated[float, Field(ge=0.0)] = 5.0
    min_class_ratio: Fraction = 0.1
    severity: dict[str, Severity] = Field(default_factory=lambda: dict(VALIDATION_SEVERITY))

    @field_validator(
        "pixel_mean_range", "pixel_std_range", "dataset_pixel_mean_range", "dataset_pixel_std_range"
    )
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"range {list(value)} has its low end above its high end")
        return value

    @field_validator("severity")
    @classmethod
    def _known_checks(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        """Keys must name checks; checks left out keep their default severity."""
        unknown = sorted(set(value) - set(VALIDATION_SEVERITY))
        if unknown:
            raise ValueError(
                f"unknown check(s) {', '.join(unknown)}; the checks are "
                f"{', '.join(VALIDATION_SEVERITY)}"
            )
        return {**VALIDATION_SEVERITY, **value}


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
    # Random erasing (Zhong et al. 2020): the chance that a rectangle of 2-40 % of the face is
    # replaced by noise, so the network cannot lean on one part of the face.
    erase_probability: Fraction = 0.0
    grid_png: Path = Path("reports/augmentation_grid.png")


class ModelCell(BaseModel):
    """One cell of the training grid: an architecture trained on a named emotion set."""

    model_config = ConfigDict(frozen=True)

    architecture: str
    emotion_set: str
    emotions: tuple[str, ...]

    @property
    def key(self) -> str:
        """Folder and stage name of the cell, e.g. ``convnn-fer7``."""
        return f"{self.architecture}-{self.emotion_set}"


# convnn, transfer, convlstm, timedelay: EmoPy's ConvolutionalNN, TransferLearningNN,
# ConvolutionalLstmNN and TimeDelayConvNN; modern: the network aimed at the state of the art.
Architecture = Literal["convnn", "transfer", "modern", "convlstm", "timedelay"]


class TransferSettings(_Block):
    """TransferLearningNN: an ImageNet network under a new head, trained in two phases.

    Phase one trains the head for ``head_epochs`` on the frozen base; phase two unfreezes
    the base's top blocks (batch norm stays frozen) for ``epochs`` epochs at
    ``fine_tune_learning_rate``. ``weights`` is a local file of the base's ImageNet weights
    without the top (Keras' ``*_notop.h5``): nothing is downloaded, and ``null`` starts the
    base from random weights.
    """

    base: Literal["inception_v3", "xception", "vgg16", "resnet50"] = "inception_v3"
    weights: Path | None = None
    head_epochs: Annotated[int, Field(ge=0)] = 5
    fine_tune_learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    dropout: Fraction = 0.5


class ModernSettings(_Block):
    """The modern network: VGG-style blocks of (conv, batch norm, ReLU) pairs, then dropout."""

    # One block per width; each halves the 48x48 input, so at most five.
    widths: Annotated[
        tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1, max_length=5)
    ] = (64, 128, 256, 512)
    convs_per_block: Annotated[int, Field(ge=1)] = 2
    block_dropout: Fraction = 0.25
    dropout: Fraction = 0.5  # before the last layer
    # Train on random crops of this side (the centre one at inference; components.face_views),
    # 40 in the published recipe: 1.4x faster per image than 48, and an augmentation. null: off.
    crop: Annotated[int, Field(ge=16, le=48)] | None = None


# Settings that define the grid rather than how one cell trains: no per-architecture override.
GRID_FIELDS = frozenset({"architectures", "emotion_sets", "overrides"})
_GRID_KEYS = GRID_FIELDS | {"out_dir"}


class TrainSettings(_Block):
    """The training grid (architectures x emotion sets) and the settings every cell shares.

    ``overrides`` changes the recipe of one architecture (e.g. more epochs and a cosine
    schedule for ``modern``); a nested block given there replaces that block whole.
    Checkpoints go to ``<out_dir>/.checkpoints/<model>/``, outside the model folder that DVC
    caches; a rerun after a crash resumes from the last one (``components.training.checkpoints``).
    """

    architectures: list[Architecture] = ["convnn"]
    emotion_sets: dict[str, tuple[str, ...]] = {"fer7": tuple(labels.FER2013_CODES.values())}
    dataset: str = "fer2013"  # image networks train on its shards
    sequence_dataset: str = "ckplus"  # sequence networks train on its sequence records
    time_delay: Annotated[int, Field(ge=1)] = 3  # frames per sequence window
    epochs: Annotated[int, Field(ge=1)] = 40
    batch_size: Annotated[int, Field(ge=1)] = 64
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    # sgd: SGD with Nesterov momentum 0.9, the optimizer of the best published FER2013 recipe.
    optimizer: Literal["adam", "sgd"] = "adam"
    # plateau: the rate is multiplied by plateau_factor after plateau_patience epochs without
    # a better val_accuracy; it needs no planned length, so a run can stop or resume anywhere.
    lr_schedule: Literal["constant", "cosine", "one_cycle", "plateau"] = "constant"
    plateau_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    plateau_patience: Annotated[int, Field(ge=1)] = 3
    # Stop after the epoch that the next one would take past this many minutes of fitting;
    # the checkpoint is kept, so running train again goes on for another budget. null: off.
    time_budget_minutes: Annotated[float, Field(gt=0)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] = 0.0  # adam: AdamW when above 0
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    mixup_alpha: Annotated[float, Field(ge=0)] = 0.0  # Beta(a, a) mixing of batch pairs; 0: off
    # balanced: weight n / (classes x count); sqrt_balanced: its square root (gentler)
    class_weight: Literal["balanced", "sqrt_balanced"] | None = None
    # Stop after this many epochs without a better val_loss and keep the best weights; null: off.
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = None
    dense_units: Annotated[int, Field(ge=1)] = 64
    sequence_filters: Annotated[int, Field(ge=1)] = 10  # convlstm and timedelay
    transfer: TransferSettings = TransferSettings()
    modern: ModernSettings = ModernSettings()
    seed: int = 2018
    deterministic: bool = True
    checkpoints: bool = True
    mixed_precision: bool = True  # float16 compute where a GPU runs the model; no-op on CPU
    multi_gpu: bool = True  # MirroredStrategy when there is more than one GPU
    overrides: Annotated[dict[Architecture, dict[str, object]], _OwnBlocks()] = {}
    out_dir: Path = Path("models")

    @field_validator("emotion_sets", mode="before")
    @classmethod
    def _canonical(cls, value: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, dict) or not value:
            raise ValueError("give at least one named emotion set, e.g. {fer7: [angry, ...]}")
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9_]+", str(name))]
        if bad:
            raise ValueError(
                f"emotion set names may hold letters, digits and _ only: {', '.join(bad)}"
            )
        return {name: labels.emotion_set(emotions) for name, emotions in value.items()}

    def grid(self) -> list[ModelCell]:
        """Every (architecture, emotion set) cell, in params order."""
        return [
            ModelCell(architecture=a, emotion_set=name, emotions=emotions)
            for a in self.architectures
            for name, emotions in self.emotion_sets.items()
        ]

    @model_validator(mode="after")
    def _overrides_are_recipes(self) -> TrainSettings:
        for architecture, changes in self.overrides.items():
            fixed = sorted(set(changes) & _GRID_KEYS)
            if fixed:
                raise ValueError(
                    f"overrides.{architecture}: {', '.join(fixed)} cannot differ by architecture"
                )
            self.recipe(architecture)
        return self

    def recipe(self, architecture: str) -> TrainSettings:
        """The settings a cell of ``architecture`` trains with: these, its overrides applied."""
        changes = self.overrides.get(architecture)
        if not changes:
            return self
        try:
            return TrainSettings.model_validate(
                {**self.model_dump(exclude={"overrides"}), **changes}
            )
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"overrides.{architecture}: {problems}") from None

    def dataset_for(self, architecture: str) -> str:
        """The dataset a cell trains on, by its recipe (sequence networks: ``sequence_dataset``)."""
        recipe = self.recipe(architecture)
        return recipe.sequence_dataset if reads_sequences(architecture) else recipe.dataset


# Test-time averaging of each face's predictions (components.face_views).
TestTimeViews = Literal["none", "flip", "ten_crop"]


class EvaluateSettings(_Block):
    """Which datasets a model is scored on, and how."""

    in_dataset: str = "fer2013"
    in_split: Literal["train", "val", "test"] = "test"
    cross_dataset: str = "ckplus"
    cross_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    # <model>/: metrics.json (the headline: DVC metrics), scores.json (every score: the gate),
    # curves.csv (the training curves: a DVC plot)
    out_dir: Path = Path("reports/evaluation")
    predictions_dir: Path = Path("reports/predictions")  # <model>.csv: DVC confusion plots
    figures_dir: Path = Path("reports/figures")  # <model>/*.png
    batch_size: Annotated[int, Field(ge=1)] = 256
    # Test-time averaging of each face's predictions: none; flip: with its mirror image;
    # ten_crop: centre and corner crops, each mirrored (components.face_views).
    tta: TestTimeViews = "none"
    calibration_bins: Annotated[int, Field(ge=2)] = 10


class Bounds(_Block):
    """A value threshold with TFX's bounds: ``upper_bound`` for metrics where lower is better."""

    lower_bound: float | None = None
    upper_bound: float | None = None

    @model_validator(mode="after")
    def _bounds_something(self) -> Bounds:
        if self.lower_bound is None and self.upper_bound is None:
            raise ValueError("give lower_bound, upper_bound or both")
        if self.lower_bound is not None and self.upper_bound is not None:
            if self.lower_bound > self.upper_bound:
                raise ValueError(f"lower_bound {self.lower_bound} > upper_bound {self.upper_bound}")
        return self


ValueThreshold = float | Bounds  # a number is a lower bound


class PromoteSettings(_Block):
    """The gate (TFX Evaluator semantics) and the registry.

    ``value_thresholds``: metric key -> lower bound, or ``{lower_bound, upper_bound}``
    (``*`` matches any one key part, e.g. ``fer2013.per_class.*.recall``).
    ``change_thresholds``: metric key -> the most the candidate may fall below the current
    champion, both scored on the same data.
    """

    model_name: str = "emoflow-{emotion_set}"
    value_thresholds: dict[str, ValueThreshold] = {"fer2013.accuracy": 0.9}
    change_thresholds: dict[str, float] = {"fer2013.accuracy": 0.02}
    out_dir: Path = Path("reports/promotion")
    # Promotions of one registered model take turns (components/judging/promotion_lock.py):
    # a promoter waits this long for the lock, which a dead holder keeps this long at most.
    lock_wait_seconds: Annotated[float, Field(ge=0)] = 900.0
    lock_lease_seconds: Annotated[float, Field(ge=5)] = 60.0

    def registered_name(self, cell: ModelCell) -> str:
        return self.model_name.format(emotion_set=cell.emotion_set, architecture=cell.architecture)


class ServeSettings(_Block):
    """How the registry model finds faces in raw images, and the limits it puts on inputs.

    Logged with the model (``components.serving.image_model``), so a served model detects faces
    as it did when it was registered, whatever this file says later.
    """

    # haar: OpenCV's cascade (fast, frontal faces, no score); yunet: OpenCV's CNN; mtcnn: the
    # `mtcnn` package's three-stage CNN (its weights ship in its wheel; slower, finds turned faces).
    detector: Literal["haar", "yunet", "mtcnn"] = "haar"
    # haar: a cascade XML (default: OpenCV's frontal face cascade); yunet: the ONNX file of
    # OpenCV's YuNet (cv2.FaceDetectorYN), required since nothing is downloaded; mtcnn: none.
    detector_model: Path | None = None
    scale_factor: Annotated[float, Field(gt=1.0)] = 1.1  # haar: image pyramid step
    min_neighbors: Annotated[int, Field(ge=0)] = 5  # haar: overlapping hits a face needs
    score_threshold: Fraction = 0.8  # yunet, mtcnn: lowest face score kept
    min_face_px: Annotated[int, Field(ge=8)] = 48  # smaller faces would be upscaled to 48x48
    # Grows each (squared) box by this fraction of its side on every side before cropping.
    # 0: a Haar box already frames a face as FER2013 and CK+48 do (box side / crop side,
    # median over upscaled crops: 0.98 on FER2013, 1.02 on CK+48).
    margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    detect_max_side: Annotated[int, Field(ge=64)] = 1280  # larger images are shrunk to detect
    max_image_bytes: Annotated[int, Field(ge=1)] = 10 * 2**20  # per encoded image
    max_image_pixels: Annotated[int, Field(ge=1)] = 40_000_000  # per image, checked before decoding
    # Per predict call (one REST request), face crops included: 10,000 crops in one call cost
    # the network's activations for all of them at once.
    max_images: Annotated[int, Field(ge=1)] = 64
    # All the encoded images of one call together (bytes, base64, files): what a call holds
    # in memory before its first image is decoded.
    max_request_bytes: Annotated[int, Field(ge=1)] = 32 * 2**20
    # All the images of one call together, from their headers, before any is decoded: the
    # per-image limit alone let one call of 64 tiny PNGs declare 2.5 billion pixels.
    max_request_pixels: Annotated[int, Field(ge=1)] = 100_000_000
    # A call stops between images past this many seconds (504), so work a client gave up on
    # does not go on; below MLflow's scoring-server timeout (60 s, `-t`), which answers 504
    # but leaves the work running. The server's own timeout caps it too, when lower.
    request_timeout_seconds: Annotated[float, Field(gt=0.0)] = 50.0
    # Images decoded and searched at once, across concurrent calls: each holds one decoded
    # image (up to max_image_pixels bytes, gray), so this bounds the server's peak memory.
    parallel_images: Annotated[int, Field(ge=1)] = 1
    # Images waiting for a turn; past it, the waiting call with the most pixels behind and
    # ahead of it is refused (503, retry later) so that cheap calls are not starved.
    queued_images: Annotated[int, Field(ge=0)] = 4
    # `emoflow serve` (components.serving.rest_server), before MLflow reads a body: the request
    # bodies read, parsed and predicted at once, in bytes (a chunked one counts all of it; a
    # larger one runs alone). MLflow's parsing of a 32 MB JSON array of pixels costs ~450 MB.
    parallel_request_bytes: Annotated[int, Field(ge=1)] = 32 * 2**20
    # ...and the requests waiting for their turn, smallest body first; past it, the largest
    # waiting is refused with 503 and Retry-After, its body unread.
    queued_requests: Annotated[int, Field(ge=0)] = 4
    # Test-time views averaged per face (components.face_views); ten_crop costs 10 passes.
    tta: TestTimeViews = "none"

    @model_validator(mode="after")
    def _detector_model_fits_the_detector(self) -> ServeSettings:
        if self.detector == "yunet" and self.detector_model is None:
            raise ValueError("detector yunet needs detector_model: the path of its .onnx file")
        if self.detector == "mtcnn" and self.detector_model is not None:
            raise ValueError(
                "detector mtcnn takes no detector_model: its weights ship in the mtcnn package"
            )
        return self


class PredictSettings(_Block):
    """``emoflow predict``: which model, and how video predictions are smoothed over time."""

    model: Location = (
        "models:/emoflow-fer7@champion"  # a registry URI, an MLflow model folder or a .keras file
    )
    ema_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = (
        0.3  # weight of the newest frame; 1: no smoothing
    )
    window: Annotated[int, Field(ge=1)] = 30  # frames over which the dominant emotion is taken
    iou_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = (
        0.3  # a box continues a track above this
    )
    max_missed: Annotated[int, Field(ge=0)] = 15  # frames a track survives without its face
    # Video: the whole frame is searched every this many frames; in between only around the
    # tracked faces (new faces wait for the next full scan). 1: every frame, as for images.
    full_scan_every: Annotated[int, Field(ge=1)] = 10


class MlflowSettings(_Block):
    """Tracking store; ``MLFLOW_TRACKING_URI`` in the environment wins over this.

    A store that is busy (a locked sqlite file) or away (a server restarting) is retried with
    backoff for ``retry_seconds`` in all, then the command fails with one line naming it.
    ``request_timeout_seconds`` and ``http_retries`` bound each call to a tracking server
    (MLflow's own defaults let one call hang for about 16 minutes); the environment's
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` win over them.
    """

    tracking_uri: Location = "sqlite:///mlflow.db"  # a relative sqlite file: beside params.yaml
    experiment: str = "emoflow"
    retry_seconds: Annotated[float, Field(ge=0)] = 60.0
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 20.0
    http_retries: Annotated[int, Field(ge=0)] = 2


class FlowSettings(_Block):
    """The Prefect flow (``emoflow pipeline``, the deployments of prefect.yaml); DVC ignores it.

    ``cache``: skip a stage whose code, settings and input files are those of a cached run
    and whose outputs are still as that run left them (rules in ``flows/caching.py``).
    ``retries``: further tries of ingest and promote after a transient error (I/O, network,
    a busy store), the first after ``retry_delay_seconds``, each next one twice as late.
    """

    cache: bool = False
    retries: Annotated[int, Field(ge=0)] = 2
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 5.0
    # Where the grid's cells run side by side: threads here, or a Dask cluster
    # (`dask_address` of a running scheduler, else a local cluster of `dask_workers`).
    task_runner: Literal["thread", "dask"] = "thread"
    max_parallel_models: Annotated[int, Field(ge=1)] = 1
    dask_address: str | None = None
    dask_workers: Annotated[int, Field(ge=1)] = 2


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
    serve: ServeSettings = ServeSettings()
    predict: PredictSettings = PredictSettings()
    flow: FlowSettings = FlowSettings()
    # Named sets of changes to the settings above (e.g. real-data: real FER2013 and CK+ with the
    # CPU recipe and gates calibrated for real data); load_params(profile=...) applies one.
    # No stage reads this block, so DVC reruns nothing when a profile is edited.
    profiles: dict[str, dict[str, Any]] = {}

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind_per_registered_model(self) -> Params:
        """A registered model's versions are compared with each other (the champion is
        re-scored on the candidate's data), so faces and sequence windows cannot share one."""
        kinds: dict[str, dict[bool, str]] = {}
        for cell in self.train.grid():
            name = self.promote.registered_name(cell)
            kinds.setdefault(name, {}).setdefault(reads_sequences(cell.architecture), cell.key)
        for name, keys in kinds.items():
            if len(keys) > 1:
                raise ValueError(
                    f"promote.model_name gives {keys[False]} (faces) and {keys[True]} (sequences) "
                    f"the same registered model {name!r}; put {{architecture}} in it, "
                    "e.g. emoflow-{architecture}-{emotion_set}"
                )
        return self


class ParamsError(EmoFlowError, ValueError):
    """``params.yaml`` is missing, not YAML, or holds an unknown key or a bad value."""


DATA_PLACEHOLDER = "{data}"  # in a profile's strings: the folder of the real datasets


def load_params(
    path: Path | str = "params.yaml",
    profiles: Sequence[str] = (),
    data: Path | str | None = None,
) -> Params:
    """Read and check ``params.yaml``; every problem is reported with its dotted key.

    ``profiles`` name entries of its ``profiles`` block, laid over the rest in order (mappings
    key by key, anything else replaced), with ``{data}`` in their strings replaced by ``data``
    (a folder given relative to the working folder; the default is relative to the file's).
    Every profile is checked on every load, so a broken one fails before anything runs.
    Relative paths are then anchored at the file's folder (see the module's docstring).
    """
    path = Path(path)
    anchor = _anchor(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ParamsError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage blocks, got {type(raw).__name__}")
    params = _validated(raw, str(path))
    folder = str(DEFAULT_DATA if data is None else _from_working_folder(Path(data), anchor))
    changes = {name: _with_data(block, folder) for name, block in params.profiles.items()}
    for name, block in changes.items():
        _validated(_merged(raw, block), f"{path}: profile {name}")
    unknown = [name for name in profiles if name not in changes]
    if unknown:
        known = ", ".join(sorted(changes)) or "none"
        raise ParamsError(f"{path}: no profile {', '.join(unknown)} (known: {known})")
    for name in profiles:
        raw = _merged(raw, changes[name])
    if profiles:
        params = _validated(raw, f"{path} with profiles {', '.join(profiles)}")
    # Defaults are anchored too: a dump holds every setting, given or not.
    return Params.model_validate(_anchored(params.model_dump(by_alias=True), Params, anchor))


DEFAULT_DATA = Path("../shared/data")  # where a profile's {data} points unless told


def _anchor(path: Path) -> Path:
    """The params file's folder; ``.`` when that is the working folder, so that a project's
    settings come out the same however its file is named (``params.yaml`` by DVC, an
    absolute path by a flow or a test): stages write some of them into their outputs, which
    must not change with the spelling."""
    folder = path.parent
    return Path(".") if folder.resolve() == Path.cwd().resolve() else folder


def _from_working_folder(path: Path, anchor: Path) -> Path:
    """``path``, given relative to the working folder, as it must be written in settings that
    are anchored at ``anchor``."""
    return path if path.is_absolute() or anchor == Path(".") else path.absolute()


def _anchored(block: dict, model: type[BaseModel], anchor: Path) -> dict:
    """``block`` (settings of ``model``, as a dict) with its relative locations made relative
    to ``anchor``, the params file's folder."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    return {
        key: value if key not in fields else _anchored_value(value, fields[key], model, anchor)
        for key, value in block.items()
    }


def _anchored_value(value: Any, field: FieldInfo, model: type[BaseModel], anchor: Path) -> Any:
    kind, marks = field.annotation, field.metadata
    if value is None:
        return value
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return _anchored(value, kind, anchor)
    if any(isinstance(mark, _OwnBlocks) for mark in marks):
        return {name: _anchored(block, model, anchor) for name, block in value.items()}
    if Path in (kind, *get_args(kind)):
        return anchor / value
    if any(isinstance(mark, _Location) for mark in marks):
        return _anchored_location(value, anchor)
    return value


def _anchored_location(value: str, anchor: Path) -> str:
    """A relative path, or the relative file of a sqlite URI, under ``anchor``; other URIs
    (``models:/``, ``runs:/``, ``http://``, an absolute sqlite file) as they are."""
    if value.startswith(SQLITE):
        return SQLITE + str(anchor / value.removeprefix(SQLITE))
    return value if ":/" in value else str(anchor / value)


def _validated(raw: dict, where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            place = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"  {place}: {message}" if place else f"  {message}")
        raise ParamsError(f"{where}: invalid settings\n" + "\n".join(problems)) from None


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it: mappings merge key by key, other values replace."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_data(value: Any, folder: str) -> Any:
    if isinstance(value, str):
        return value.replace(DATA_PLACEHOLDER, folder)
    if isinstance(value, dict):
        return {key: _with_data(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_data(item, folder) for item in value]
    return value
