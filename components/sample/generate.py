"""Sample data: a FER2013-style csv and CK+48-style folders of procedurally drawn faces.

The real datasets sit behind a download and a licence click-through, so without a
built-in sample a new user (or CI) could not run a single stage. The faces are cartoons,
but each emotion moves the facial parts it moves in the real datasets (brows, lids, lips,
nose), and every image also varies in things a model must learn to ignore (identity, pose,
lighting, noise), so the task is learnable yet not a lookup of one pixel. The two datasets
are drawn in different styles, as FER2013 (web photos) and CK+ (studio sequences) are, so
that the cross-dataset evaluation meets a real domain shift.

Every image is drawn from its own random stream keyed by (seed, stream, ...indices), so
equal settings give byte-identical files and changing one count (``images_per_class``, the
usage fractions) does not redraw the images that stay.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emoflow.components import labels
from emoflow.components.artifacts import atomic_dir, atomic_file
from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.provenance import mark_sample
from emoflow.components.settings import SampleSettings

FER2013_CSV = "fer2013.csv"
CKPLUS48_DIR = "ckplus48"
USAGES = ("Training", "PublicTest", "PrivateTest")  # row order of the Kaggle file
FIRST_SUBJECT = 5  # CK+ subject ids start at S005

SUPERSAMPLE = 4  # draw at 4x and area-downsample: anti-aliasing for every shape at once
CANVAS = IMAGE_SIZE * SUPERSAMPLE
_SHIFT = 4  # fractional bits of cv2's sub-pixel drawing coordinates

# Random stream ids: the first spawn key names what a stream draws, so no two collide.
_FER_STREAM, _ORDER_STREAM, _SUBJECT_STREAM, _SEQUENCE_STREAM, _FAST_STREAM = range(5)

# Formatting 2304 ints per row with str() dominated the csv writing; a table lookup does not.
_PIXEL_TEXT = [str(value) for value in range(256)]

Point = tuple[float, float]


@dataclass(frozen=True)
class SampleFiles:
    """What :func:`generate_sample` wrote; the paths ``ingest`` reads by default."""

    fer2013_csv: Path
    ckplus_dir: Path


# --- What a face is made of ----------------------------------------------------------------
# Lengths are in head half-heights, with y pointing down and the origin at the head centre,
# so identity, expression and pose compose without knowing about pixels.


@dataclass(frozen=True)
class Expression:
    """Displacements of facial parts from a resting face.

    Zero is the neutral face, so an expression at intensity t is its peak scaled by t: one
    drawing routine serves FER2013's single images and CK+'s onset-to-peak sequences.
    """

    brow_raise: float = 0.0  # both brows up (+) or down (-)
    brow_tilt: float = 0.0  # inner ends up (+, sad, fear) or down (-, the angry V)
    brow_pinch: float = 0.0  # inner ends drawn toward the nose
    brow_arch: float = 0.0  # middles lifted into an arch
    eye_open: float = 0.0  # relative change of eye height: wide (+) or narrowed (-)
    mouth_curve: float = 0.0  # lip corners up (+, smile) or down (-)
    mouth_open: float = 0.0  # gap between the lips
    mouth_stretch: float = 0.0  # relative change of mouth width
    lip_press: float = 0.0  # relative thickening of the lip line
    smirk: float = 0.0  # one lip corner raised: the right (+) or the left (-)
    upper_lip_raise: float = 0.0  # upper lip lifted off the lower one
    nose_wrinkle: float = 0.0  # darkness of the wrinkles across the nose, 0..1

    def scaled(self, factor: float) -> Expression:
        return Expression(*(factor * value for value in astuple(self)))

    def plus(self, other: Expression) -> Expression:
        return Expression(*(a + b for a, b in zip(astuple(self), astuple(other))))


# Peak expressions, after the action units FACS lists for each emotion, exaggerated enough
# to survive 48x48 pixels. Keyed by canonical name: both datasets draw from the same table.
PEAKS: dict[str, Expression] = {
    "neutral": Expression(),
    "happy": Expression(
        brow_raise=0.02, eye_open=-0.4, mouth_curve=0.17, mouth_open=0.09, mouth_stretch=0.2
    ),
    "sad": Expression(
        brow_tilt=0.18, brow_pinch=0.04, eye_open=-0.25, mouth_curve=-0.2, mouth_stretch=-0.1
    ),
    "angry": Expression(
        brow_raise=-0.07,
        brow_tilt=-0.16,
        brow_pinch=0.05,
        eye_open=-0.45,
        mouth_curve=-0.04,
        mouth_stretch=-0.3,
        lip_press=1.5,
    ),
    "surprise": Expression(
        brow_raise=0.14, brow_arch=0.07, eye_open=0.7, mouth_open=0.34, mouth_stretch=-0.4
    ),
    "fear": Expression(
        brow_raise=0.07,
        brow_tilt=0.1,
        brow_pinch=0.06,
        eye_open=0.7,
        mouth_curve=-0.05,
        mouth_open=0.16,
        mouth_stretch=0.3,
    ),
    "disgust": Expression(
        brow_raise=-0.05,
        brow_tilt=-0.02,
        brow_pinch=0.03,
        eye_open=-0.4,
        mouth_curve=-0.06,
        mouth_stretch=-0.1,
        smirk=0.07,
        upper_lip_raise=0.16,
        nose_wrinkle=1.0,
    ),
    "contempt": Expression(eye_open=-0.1, lip_press=0.5, smirk=0.15),
}


@dataclass(frozen=True)
class Style:
    """How one dataset looks: the ranges its people and viewing conditions are drawn from."""

    face_px: tuple[float, float]  # head half-height in output pixels: the crop
    max_rotation_deg: float
    max_shift_px: float
    head_width: tuple[float, float]  # head half-width over half-height
    chin_taper: tuple[float, float]
    skin: tuple[float, float]  # gray levels
    background: tuple[float, float]
    max_background_slope: float  # gray levels across the image
    max_light_slope: float  # relative brightness change across the image
    noise_sigma: tuple[float, float]
    hair_probability: float
    expression_spread: float  # relative deviation of each part from the peak expression


# FER2013: faces found on the web, loosely aligned, any lighting, low-quality images.
# These ranges and PEAKS were tuned together: EmoPy's small ConvolutionalNN reaches about
# 93-96 % test accuracy after 20 epochs, so the promotion gate (0.9) is met but not trivially.
# The translation dominates the difficulty: that network has no global pooling.
FER2013_STYLE = Style(
    face_px=(17.0, 22.5),
    max_rotation_deg=12.0,
    max_shift_px=3.0,
    head_width=(0.7, 0.84),
    chin_taper=(0.1, 0.3),
    skin=(80.0, 210.0),
    background=(10.0, 245.0),
    max_background_slope=40.0,
    max_light_slope=0.25,
    noise_sigma=(2.0, 7.0),
    hair_probability=0.7,
    expression_spread=0.2,
)

# CK+: posed in a studio, frontal, cropped tightly, lit brightly and evenly, clean sensor.
CKPLUS48_STYLE = Style(
    face_px=(23.5, 25.5),
    max_rotation_deg=3.0,
    max_shift_px=1.0,
    head_width=(0.8, 0.92),
    chin_taper=(0.0, 0.12),
    skin=(160.0, 225.0),
    background=(150.0, 200.0),
    max_background_slope=10.0,
    max_light_slope=0.05,
    noise_sigma=(1.0, 2.0),
    hair_probability=0.5,
    expression_spread=0.15,
)

# FER2013 images are labelled by their dominant expression, rarely a faint one.
FER2013_INTENSITY = (0.75, 1.0)


@dataclass(frozen=True)
class Identity:
    """One person: head shape, tones and where their features sit."""

    head_width: float
    chin_taper: float
    skin: float
    ink: float  # brows, lids and lips as a fraction of the skin's brightness
    hair: float | None  # gray level; None for no hair
    hairline: float
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float  # height of the brows above the eyes
    brow_len: float
    brow_thick: float
    nose_y: float
    mouth_y: float
    mouth_w: float
    rest: Expression  # resting face: some people look a little sad or stern when neutral


@dataclass(frozen=True)
class Scene:
    """Viewing conditions of one FER2013 image, or of all frames of one CK+ subject."""

    face_px: float
    rotation_deg: float
    shift_px: Point
    background: float
    background_slope: tuple[float, float]
    light_slope: tuple[float, float]
    noise_sigma: float


# --- Public entry point --------------------------------------------------------------------


def generate_sample(settings: SampleSettings) -> SampleFiles:
    """Write ``fer2013.csv`` and ``ckplus48/`` under ``settings.out_dir``, all or nothing."""
    with atomic_dir(settings.out_dir) as tmp:
        _write_fer2013(tmp / FER2013_CSV, settings)
        _write_ckplus48(tmp / CKPLUS48_DIR, settings)
        mark_sample(tmp, settings.seed)
    return SampleFiles(settings.out_dir / FER2013_CSV, settings.out_dir / CKPLUS48_DIR)


# --- FER2013 -------------------------------------------------------------------------------


def _write_fer2013(path: Path, settings: SampleSettings) -> None:
    """The canonical Kaggle csv: Training rows, then PublicTest, then PrivateTest."""
    counts = _usage_counts(settings.images_per_class, settings.usage_fractions)
    blocks: dict[str, list[str]] = {usage: [] for usage in USAGES}
    for code, emotion in labels.FER2013_CODES.items():
        for index, usage in enumerate(np.repeat(USAGES, counts)):
            image = _fer2013_image(emotion, _rng(settings.seed, _FER_STREAM, code, index))
            blocks[usage].append(f"{code},{_pixels_text(image)},{usage}")
    # Classes are mixed within a block, as in the Kaggle file; the blocks stay in order.
    order = _rng(settings.seed, _ORDER_STREAM)
    rows = [row for usage in USAGES for row in _shuffled(blocks[usage], order)]
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{row}\n" for row in rows), "ascii")


def _usage_counts(total: int, fractions: dict[str, float]) -> list[int]:
    """Split ``total`` by the fractions, rounding by largest remainder so counts sum up."""
    exact = np.array([fractions.get(usage, 0.0) for usage in USAGES]) * total
    counts = np.floor(exact).astype(int)
    by_remainder = np.argsort(counts - exact, kind="stable")
    counts[by_remainder[: total - counts.sum()]] += 1
    return counts.tolist()


def _fer2013_image(emotion: str, rng: np.random.Generator) -> np.ndarray:
    """A new person, pose and intensity for every image, as in a web-scraped dataset."""
    identity = _identity(FER2013_STYLE, rng)
    scene = _scene(FER2013_STYLE, rng)
    peak = _variant(PEAKS[emotion], FER2013_STYLE.expression_spread, rng)
    expression = identity.rest.plus(peak.scaled(rng.uniform(*FER2013_INTENSITY)))
    return _render(identity, expression, scene, rng)


def _pixels_text(image: np.ndarray) -> str:
    return " ".join([_PIXEL_TEXT[value] for value in image.ravel().tolist()])


def _shuffled(rows: list[str], rng: np.random.Generator) -> list[str]:
    return [rows[i] for i in rng.permutation(len(rows))]


# --- A large FER2013 csv, fast --------------------------------------------------------------
# For measuring the pipeline's cost against data size (bench/scale.py): drawing a face costs
# ~2 ms, 30 minutes per million images on one core, so the fast path draws a pool of faces
# once and gives every row one of them with its own sensor noise.

POOL_PER_CLASS = 64  # faces drawn per class; the sample's first faces of each class
FAST_NOISE = 4  # grey levels of uniform noise per pixel: every row a distinct image
FAST_BLOCK = 4096  # rows per random stream and per write; part of what the seed reproduces
# Each grey level's text with its separator, as fixed-width bytes and their used length, so
# that a block of images becomes csv text by array indexing instead of 2304 str() per row.
_PIXEL_BYTES = np.array([list(f"{v} ".encode().ljust(4)) for v in range(256)], dtype=np.uint8)
_PIXEL_WIDTH = np.array([len(f"{v} ") for v in range(256)])


def write_large_fer2013(
    path: Path, images: int, seed: int = 2018, usage_fractions: dict[str, float] | None = None
) -> Path:
    """A FER2013-format csv of ``images`` rows at ``path``, the same for the same arguments.

    Rows are in Kaggle's usage order (Training, PublicTest, PrivateTest, by
    ``usage_fractions``, default 0.8/0.1/0.1) with classes drawn uniformly. A file already at
    ``path`` is kept, so a benchmark pays for it once: name it by its size and seed. It is
    written to a temporary file and renamed, so a file at ``path`` is always complete.
    """
    if path.exists():
        return path
    fractions = usage_fractions or dict(zip(USAGES, (0.8, 0.1, 0.1)))
    usages = np.repeat(np.arange(len(USAGES)), _usage_counts(images, fractions))
    pool = np.stack(
        [
            [
                _fer2013_image(emotion, _rng(seed, _FER_STREAM, code, index))
                for index in range(POOL_PER_CLASS)
            ]
            for code, emotion in labels.FER2013_CODES.items()
        ]
    ).astype(np.int16)
    with atomic_file(path) as tmp, tmp.open("wb") as out:
        out.write(b"emotion,pixels,Usage\n")
        for start in tqdm(range(0, images, FAST_BLOCK), desc=f"write {path.name}", mininterval=5):
            rng = _rng(seed, _FAST_STREAM, start // FAST_BLOCK)
            count = min(FAST_BLOCK, images - start)
            codes = rng.integers(0, len(labels.FER2013_CODES), count)
            faces = pool[codes, rng.integers(0, POOL_PER_CLASS, count)]
            noise = rng.integers(-FAST_NOISE, FAST_NOISE + 1, faces.shape, dtype=np.int16)
            block = np.clip(faces + noise, 0, 255).astype(np.uint8)
            out.write(_csv_rows(codes, block, usages[start : start + count]))
    return path


def _csv_rows(codes: np.ndarray, images: np.ndarray, usages: np.ndarray) -> bytes:
    """``emotion,pixels,Usage`` lines of a block of images, formatted by array indexing."""
    flat = images.reshape(len(images), -1)
    widths = _PIXEL_WIDTH[flat]
    text = memoryview(_PIXEL_BYTES[flat][np.arange(4) < widths[..., np.newaxis]].tobytes())
    ends = np.cumsum(widths.sum(axis=1)).tolist()
    parts: list[bytes | memoryview] = []
    start = 0
    for code, usage, end in zip(codes.tolist(), usages.tolist(), ends):
        # each image's text ends with a separator: the line drops it
        parts += [b"%d," % code, text[start : end - 1], b",%s\n" % USAGES[usage].encode()]
        start = end
    return b"".join(parts)


# --- CK+48 ---------------------------------------------------------------------------------


def _write_ckplus48(root: Path, settings: SampleSettings) -> None:
    """One sequence per emotion per subject, neutral at frame 1 to the peak at the last."""
    folders = list(labels.CKPLUS48_FOLDERS)
    for folder in folders:
        (root / folder).mkdir(parents=True)
    for subject_index in range(settings.ckplus_subjects):
        subject_rng = _rng(settings.seed, _SUBJECT_STREAM, subject_index)
        identity = _identity(CKPLUS48_STYLE, subject_rng)
        # A subject's sequences were filmed in one session: same camera, crop and lights.
        scene = _scene(CKPLUS48_STYLE, subject_rng)
        # ...but in no particular emotion order.
        numbers = subject_rng.permutation(len(folders)) + 1
        for folder_index, (folder, number) in enumerate(zip(folders, numbers)):
            rng = _rng(settings.seed, _SEQUENCE_STREAM, subject_index, folder_index)
            emotion = labels.CKPLUS48_FOLDERS[folder]
            peak = _variant(PEAKS[emotion], CKPLUS48_STYLE.expression_spread, rng)
            stem = f"S{FIRST_SUBJECT + subject_index:03d}_{number:03d}"
            for step in range(settings.ckplus_frames):
                # Intensity grows linearly from 0 at frame 1 to 1 at the last frame.
                expression = identity.rest.plus(peak.scaled(step / (settings.ckplus_frames - 1)))
                image = _render(identity, expression, scene, rng)
                _write_png(root / folder / f"{stem}_{step + 1:08d}.png", image)


def _write_png(path: Path, image: np.ndarray) -> None:
    # cv2 reports a failed write by its return value only.
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write the image")


# --- Random people, poses and expressions --------------------------------------------------


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, keys): no draw order couples two images."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


def _identity(style: Style, rng: np.random.Generator) -> Identity:
    uniform = rng.uniform
    skin = uniform(*style.skin)
    has_hair = rng.random() < style.hair_probability
    return Identity(
        head_width=uniform(*style.head_width),
        chin_taper=uniform(*style.chin_taper),
        skin=skin,
        ink=uniform(0.2, 0.45),
        hair=min(255.0, skin * uniform(0.15, 1.2)) if has_hair else None,
        hairline=uniform(-0.75, -0.5),
        eye_x=uniform(0.28, 0.36),
        eye_y=uniform(-0.18, -0.06),
        eye_w=uniform(0.12, 0.16),
        eye_h=uniform(0.065, 0.085),
        brow_gap=uniform(0.16, 0.22),
        brow_len=uniform(0.26, 0.34),
        brow_thick=uniform(0.05, 0.08),
        nose_y=uniform(0.18, 0.28),
        mouth_y=uniform(0.45, 0.55),
        mouth_w=uniform(0.22, 0.3),
        rest=Expression(
            brow_raise=rng.normal(0.0, 0.02),
            brow_tilt=rng.normal(0.0, 0.015),
            eye_open=rng.normal(0.0, 0.1),
            mouth_curve=rng.normal(0.0, 0.015),
        ),
    )


def _scene(style: Style, rng: np.random.Generator) -> Scene:
    return Scene(
        face_px=rng.uniform(*style.face_px),
        rotation_deg=rng.uniform(-1.0, 1.0) * style.max_rotation_deg,
        shift_px=_in_disc(style.max_shift_px, rng),
        background=rng.uniform(*style.background),
        background_slope=tuple(rng.uniform(-1.0, 1.0, 2) * style.max_background_slope),
        light_slope=tuple(rng.uniform(-1.0, 1.0, 2) * style.max_light_slope),
        noise_sigma=rng.uniform(*style.noise_sigma),
    )


def _in_disc(radius: float, rng: np.random.Generator) -> Point:
    """A point uniform in a disc: the face is off-centre by at most ``radius`` in any direction.

    A square would allow corners sqrt(2) further out, and those few far-off faces are what
    a small network without global pooling finds hardest.
    """
    angle = rng.uniform(0.0, 2.0 * np.pi)
    distance = radius * np.sqrt(rng.uniform())
    return distance * np.cos(angle), distance * np.sin(angle)


def _variant(peak: Expression, spread: float, rng: np.random.Generator) -> Expression:
    """The peak as one person poses it: each part a little stronger or weaker.

    A smirk is the same expression on either side, so its side is a coin flip (which also
    keeps horizontal flips in training augmentation label-preserving).
    """
    factors = np.clip(1.0 + spread * rng.standard_normal(len(astuple(peak))), 0.0, None)
    varied = Expression(*(value * factor for value, factor in zip(astuple(peak), factors)))
    return replace(varied, smirk=varied.smirk * rng.choice([-1.0, 1.0]))


# --- Drawing -------------------------------------------------------------------------------


class _Pen:
    """Draws shapes given in face units onto the supersampled canvas of one scene."""

    def __init__(self, canvas: np.ndarray, scene: Scene) -> None:
        self.canvas = canvas
        self.unit_px = scene.face_px * SUPERSAMPLE
        angle = np.deg2rad(scene.rotation_deg)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.linear = self.unit_px * rotation
        self.centre = CANVAS / 2 + np.asarray(scene.shift_px) * SUPERSAMPLE

    def fill(self, points: np.ndarray, tone: float) -> None:
        cv2.fillPoly(self.canvas, self._pixels(points), float(tone), shift=_SHIFT)

    def line(self, points: np.ndarray, tone: float, width: float, closed: bool = False) -> None:
        thickness = max(1, round(width * self.unit_px))
        pixels = self._pixels(points)
        cv2.polylines(self.canvas, pixels, closed, float(tone), thickness, shift=_SHIFT)

    def _pixels(self, points: np.ndarray) -> list[np.ndarray]:
        xy = points @ self.linear.T + self.centre
        return [np.rint(xy * (1 << _SHIFT)).astype(np.int32)]


def _render(
    identity: Identity, expression: Expression, scene: Scene, rng: np.random.Generator
) -> np.ndarray:
    """Draw one 48x48 8-bit face; ``rng`` adds only the sensor noise."""
    canvas = (scene.background + _ramp(CANVAS, scene.background_slope)).astype(np.float32)
    pen = _Pen(canvas, scene)
    _draw_head(pen, identity)
    _draw_brows(pen, identity, expression)
    _draw_eyes(pen, identity, expression)
    _draw_nose(pen, identity, expression)
    _draw_mouth(pen, identity, expression)
    image = cv2.resize(canvas, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    # Light falls off across the whole scene, so it scales rather than shifts the pixels.
    image = image * (1.0 + _ramp(IMAGE_SIZE, scene.light_slope))
    image += rng.normal(0.0, scene.noise_sigma, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _ramp(size: int, slope: tuple[float, float]) -> np.ndarray:
    """A linear field that changes by ``slope`` (x, y) across a square image."""
    coords = (np.arange(size) + 0.5) / size - 0.5
    return slope[0] * coords[np.newaxis, :] + slope[1] * coords[:, np.newaxis]


def _draw_head(pen: _Pen, identity: Identity) -> None:
    outline = _head_outline(identity)
    if identity.hair is not None:
        # Volume around the crown, behind the head: only the upper half shows.
        crown = outline * [1.12, 1.08] + [0.0, -0.06]
        pen.fill(crown[crown[:, 1] < 0.1], identity.hair)
    neck = np.array([[-0.38, 0.6], [0.38, 0.6], [0.45, 2.0], [-0.45, 2.0]])
    pen.fill(neck * [identity.head_width, 1.0], 0.8 * identity.skin)
    pen.fill(outline, identity.skin)
    if identity.hair is not None:
        # The outline runs from the chin over the top, so the part above the hairline is one
        # arc; it closes along a hairline that dips a little toward the middle.
        arc = outline[outline[:, 1] < identity.hairline]
        x = np.linspace(arc[-1, 0], arc[0, 0], 9)
        dip = identity.hairline + 0.08 * (1.0 - (x / arc[-1, 0]) ** 2)
        pen.fill(np.vstack([arc, np.column_stack([x, dip])]), identity.hair)


def _head_outline(identity: Identity) -> np.ndarray:
    """An egg: an ellipse whose lower half narrows toward the chin."""
    t = np.linspace(-np.pi, np.pi, 64, endpoint=False)
    y = -np.cos(t)
    x = identity.head_width * np.sin(t) * (1.0 - identity.chin_taper * np.clip(y, 0.0, None))
    return np.column_stack([x, y])


def _draw_brows(pen: _Pen, identity: Identity, expression: Expression) -> None:
    base = identity.eye_y - identity.brow_gap - expression.brow_raise
    inner_y = base - expression.brow_tilt
    outer_y = base + 0.4 * expression.brow_tilt
    for side in (-1.0, 1.0):
        inner = (side * (identity.eye_x - identity.brow_len / 2 - expression.brow_pinch), inner_y)
        outer = (side * (identity.eye_x + identity.brow_len / 2), outer_y)
        # A resting brow already arches a little; surprise lifts the middle further.
        middle = ((inner[0] + outer[0]) / 2, (inner_y + outer_y) / 2 - 0.03 - expression.brow_arch)
        pen.line(_through(inner, middle, outer), identity.skin * identity.ink, identity.brow_thick)


def _draw_eyes(pen: _Pen, identity: Identity, expression: Expression) -> None:
    # A squint never quite closes the eye; a closed eye would read as a blink, not an emotion.
    height = identity.eye_h * max(0.15, 1.0 + expression.eye_open)
    iris = min(0.5 * identity.eye_w, height)
    ink = identity.skin * identity.ink
    sclera = min(255.0, 1.15 * identity.skin + 25.0)
    for side in (-1.0, 1.0):
        x, y = side * identity.eye_x, identity.eye_y
        pen.fill(_ellipse(x, y, identity.eye_w, height), sclera)
        pen.fill(_ellipse(x, y, iris, iris), 0.6 * ink)
        pen.line(_ellipse(x, y, identity.eye_w, height), ink, 0.035, closed=True)


def _draw_nose(pen: _Pen, identity: Identity, expression: Expression) -> None:
    shadow = 0.75 * identity.skin
    bridge_top = identity.eye_y + 0.08
    pen.line(np.array([[0.02, bridge_top], [0.05, identity.nose_y]]), shadow, 0.03)
    tip = identity.nose_y
    pen.line(_through((-0.09, tip), (0.0, tip + 0.04), (0.09, tip)), 0.6 * identity.skin, 0.035)
    if expression.nose_wrinkle <= 0.0:
        return  # even a skin-toned wrinkle would paint over the bridge
    # Wrinkles deepen with the expression: from skin toward (not quite to) the brows' ink.
    depth = min(1.0, expression.nose_wrinkle)
    tone = identity.skin * (1.0 - 0.8 * depth * (1.0 - identity.ink))
    for row in range(3):
        y = bridge_top - 0.04 + 0.05 * row
        pen.line(_through((-0.08, y), (0.0, y - 0.02), (0.08, y)), tone, 0.025)
    # The folds from the nose wings to the mouth corners deepen as the upper lip rises.
    wing_x, corner_x = 0.12, identity.mouth_w + 0.04
    wing_y, corner_y = identity.nose_y - 0.02, identity.mouth_y - 0.02
    for side in (-1.0, 1.0):
        # Each fold bows outward around the cheek.
        bend = (side * ((wing_x + corner_x) / 2 + 0.03), (wing_y + corner_y) / 2)
        pen.line(_through((side * wing_x, wing_y), bend, (side * corner_x, corner_y)), tone, 0.03)


def _draw_mouth(pen: _Pen, identity: Identity, expression: Expression) -> None:
    """Lips as two curves between the corners; the gap between them is the open mouth."""
    u = np.linspace(-1.0, 1.0, 17)
    x = u * identity.mouth_w * (1.0 + expression.mouth_stretch)
    right, left = np.clip(u, 0.0, None) ** 2, np.clip(-u, 0.0, None) ** 2
    centre = (
        identity.mouth_y
        - expression.mouth_curve * u**2
        - max(expression.smirk, 0.0) * right
        - max(-expression.smirk, 0.0) * left
    )
    # An exponent below 1 rounds the opening, so a tall open mouth reads as an O.
    opening = (1.0 - u**2) ** 0.6
    half_open = max(expression.mouth_open, 0.0) / 2
    upper = centre - (half_open + max(expression.upper_lip_raise, 0.0)) * opening
    lower = centre + half_open * opening
    lips = np.vstack([np.column_stack([x, upper]), np.column_stack([x, lower])[::-1]])
    pen.fill(lips, 0.15 * identity.skin)
    width = 0.04 * (1.0 + max(expression.lip_press, 0.0))
    pen.line(lips, identity.skin * identity.ink, width, closed=True)


def _ellipse(x: float, y: float, rx: float, ry: float) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    return np.column_stack([x + rx * np.cos(t), y + ry * np.sin(t)])


def _through(start: Point, middle: Point, end: Point) -> np.ndarray:
    """A smooth curve from ``start`` through ``middle`` (at its half-way point) to ``end``."""
    a, m, b = (np.asarray(p) for p in (start, middle, end))
    control = 2.0 * m - (a + b) / 2.0  # the quadratic Bezier control point that passes ``m``
    t = np.linspace(0.0, 1.0, 9)[:, np.newaxis]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b
