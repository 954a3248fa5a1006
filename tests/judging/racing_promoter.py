"""One promoter of ``test_promotion_lock.py``'s race, as a separate process.

It does what the gate does for each of its candidates, under the promotion lock: register,
read the champion, take time over the comparison (the champion's re-scoring), move the alias
when the candidate is better, and log the move. Usage:
``python -m tests.judging.racing_promoter STORE NAME LOG SCORE...``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from emoflow.components import mlflow_store
from emoflow.components.judging import registry
from emoflow.components.judging.promotion_lock import promotion_lock
from emoflow.components.settings import MlflowSettings

RESCORING_SECONDS = 0.3


def promote_all(store: str, name: str, log: Path, scores: list[float]) -> None:
    settings = MlflowSettings(tracking_uri=store)
    client = mlflow_store.connect(settings)
    for score in scores:
        with promotion_lock(client, name, 600, 10, settings) as lock:
            version = client.create_model_version(name, str(log.parent), tags={"score": str(score)})
            current = registry.champion(client, name)
            before = float(current.tags["score"]) if current else None
            time.sleep(RESCORING_SECONDS)
            if before is None or score > before:
                lock.check_held()
                client.set_registered_model_alias(name, registry.CHAMPION, version.version)
                move = {"at": time.time(), "before": before, "after": score}
                with log.open("a") as out:
                    out.write(json.dumps(move) + "\n")


if __name__ == "__main__":
    store_uri, model_name, log_path, *given = sys.argv[1:]
    promote_all(store_uri, model_name, Path(log_path), [float(s) for s in given])
