"""The files of a trained model's folder (``models/<model>/``) and of its checkpoints.

Train writes them; evaluate, promote and ``emoflow predict`` read them. Declared once here
so that no stage imports another only for a file name.
"""

from __future__ import annotations

MODEL_FILE = "model.keras"  # the Keras network
RUN_FILE = "run.json"  # the MLflow run, model URI, architecture and emotions of the training
HISTORY_FILE = "history.json"  # per-epoch metrics
CURVES_FILE = "curves.png"  # the training curves
