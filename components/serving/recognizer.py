"""The peers' one-liner over an EmoFlow model.

fer's ``FER().detect_emotions(img)`` and DeepFace's ``analyze(img)`` answer one image with a
list of faces. The same call over a registered model, with its own detector, preprocessing
and limits::

    from emoflow.components.serving.recognizer import Recognizer

    Recognizer("models:/emoflow-fer7@champion").detect_emotions("photo.jpg")
    # [{"box": [x, y, w, h], "emotions": {"angry": 0.02, ...}, "emotion": "happy",
    #   "face_score": 0.99}, ...]

``img`` is what the registry model takes for one image (``components.serving.model_inputs``):
a file path, an HxW or HxWx3 array (BGR, as ``cv2.imread`` gives; ``channel_order="rgb"``
otherwise), encoded bytes or base64 text.
"""

from __future__ import annotations

import pandas as pd

from emoflow.components.serving.image_model import BOX_COLUMNS, SCORE_COLUMN, TOP_COLUMN
from emoflow.components.settings import MlflowSettings, ServeSettings

DEFAULT_MODEL = "models:/emoflow-fer7@champion"


class Recognizer:
    """A loaded model answering one image at a time with a list of faces.

    ``model``: ``models:/NAME@ALIAS`` (or ``/VERSION``), an MLflow model folder, or a
    ``.keras`` file beside its ``run.json``. The registry is ``tracking_uri``, else
    ``MLFLOW_TRACKING_URI``, else the project's ``sqlite:///mlflow.db``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, tracking_uri: str | None = None):
        from emoflow.components.serving.predict import load_classifier

        # serve settings only matter for a bare .keras file: a logged model carries its own
        self.classifier = load_classifier(model, ServeSettings(), MlflowSettings(), tracking_uri)
        self.model = model

    @property
    def emotions(self) -> list[str]:
        return self.classifier.emotions

    def detect_emotions(self, image, channel_order: str = "bgr") -> list[dict]:
        """Every face in one image, left to right: its box, emotion probabilities, top
        emotion and the detector's confidence (``face_score``, None where it gives none)."""
        table = self.classifier.predict(
            None, [image], {"mode": "detect", "channel_order": channel_order}
        )
        return faces(table, self.emotions)


def faces(table: pd.DataFrame, emotions: list[str]) -> list[dict]:
    """The registry model's rows for one image as the peers' list of face dicts."""
    return [
        {
            "box": [int(row[c]) for c in BOX_COLUMNS],
            "emotions": {e: float(row[e]) for e in emotions},
            "emotion": str(row[TOP_COLUMN]),
            "face_score": None if pd.isna(row[SCORE_COLUMN]) else float(row[SCORE_COLUMN]),
        }
        for _, row in table.iterrows()
    ]
