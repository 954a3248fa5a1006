"""The canonical emotion vocabulary and each dataset's map into it.

Every dataset speaks its own label dialect (FER2013 uses integers 0..6, CK+48 uses folder
names such as ``sadness``, the original CK+ uses codes 0..7). Everything downstream of
ingest speaks only the canonical names below, so that a model trained on one dataset can be
scored on another by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CANONICAL: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
    "contempt",
)

# EmoPy and RIOT said "calm" for what FER2013 calls neutral; other common synonyms too.
ALIASES: dict[str, str] = {
    "calm": "neutral",
    "anger": "angry",
    "sadness": "sad",
    "happiness": "happy",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}

FER2013_CODES: dict[int, str] = {
    0: "angry",
    1: "disgust",
    2: "fear",
    3: "happy",
    4: "sad",
    5: "surprise",
    6: "neutral",
}

# FER2013 class folders of the Kaggle image-folder layout (train|test/<class>/*.png|jpg).
FER2013_FOLDERS: dict[str, str] = {name: name for name in FER2013_CODES.values()}

# FER+ vote columns (fer2013new.csv), in file order; its other two, unknown and NF (not a
# face), are no emotion.
FERPLUS_VOTES: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}

# Emotion codes of the original CK+ distribution (Emotion/S005/001/*_emotion.txt).
CKPLUS_CODES: dict[int, str] = {
    0: "neutral",
    1: "angry",
    2: "contempt",
    3: "disgust",
    4: "fear",
    5: "happy",
    6: "sad",
    7: "surprise",
}

# CK+48 class folders, as distributed.
CKPLUS48_FOLDERS: dict[str, str] = {
    "anger": "angry",
    "contempt": "contempt",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "sadness": "sad",
    "surprise": "surprise",
}


def canonical(name: str) -> str:
    """Return the canonical name of an emotion, accepting aliases; raise on unknown names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CANONICAL:
        raise ValueError(
            f"unknown emotion {name!r}; expected one of {', '.join(CANONICAL)} "
            f"(or an alias: {', '.join(sorted(ALIASES))})"
        )
    return key


def emotion_set(names: Iterable[str]) -> tuple[str, ...]:
    """Canonicalise an emotion set, keeping the user's order (it fixes the class indices)."""
    result = tuple(canonical(n) for n in names)
    duplicates = sorted({n for n in result if result.count(n) > 1})
    if duplicates:
        raise ValueError(f"emotion set names {', '.join(duplicates)} more than once")
    if len(result) < 2:
        raise ValueError("an emotion set needs at least two emotions")
    return result


def index_table(emotions: Sequence[str]) -> list[int]:
    """Map canonical index -> class index in ``emotions``, -1 for emotions left out.

    Used as a lookup table inside tf.data so that images of other classes can be dropped
    without leaving the graph.
    """
    return [emotions.index(name) if name in emotions else -1 for name in CANONICAL]
