"""How MLflow stores a registry model: as code it runs when loading, with an input example.

Models from code: MLflow keeps a short script that makes the model object
(``mlflow.models.set_model``) instead of a cloudpickle of it. Loading runs that script and the
code shipped with the model (``code/emoflow/components``), readable files rather than pickled
objects, and still works where MLflow refuses to unpickle
(``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``). The artifacts (network, face detector,
settings) travel as before and reach ``load_context``.

The input example is one face of the built-in synthetic sample (``example_face.png``: sample
subject S005 at the peak of ``happy``, from ``emoflow sample`` with seed 2018, one subject
and two frames), the same for every model. A face from the training data would put a real
person's photo into every model, and for CK+ an image its licence keeps from publication.
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

EXAMPLE_FACE = Path(__file__).with_name("example_face.png")
CODE_FILE = "model_code.py"  # the script's name, inside the logged model
_SCRIPT = '''"""MLflow runs this file to load the model (models from code)."""

import mlflow

from {module} import {name}

mlflow.models.set_model({name}())
'''


def code_file(model_class: type, folder: Path) -> Path:
    """Write the script that makes a ``model_class`` into ``folder``; its path is what
    ``mlflow.pyfunc.log_model`` takes as ``python_model``."""
    path = folder / CODE_FILE
    path.write_text(_SCRIPT.format(module=model_class.__module__, name=model_class.__name__))
    return path


def example_face() -> np.ndarray:
    """The example face, uint8 [48, 48]."""
    return cv2.imread(str(EXAMPLE_FACE), cv2.IMREAD_GRAYSCALE)


def example_base64() -> str:
    """The example face's PNG as base64 text, the form REST clients send."""
    return base64.b64encode(EXAMPLE_FACE.read_bytes()).decode()
