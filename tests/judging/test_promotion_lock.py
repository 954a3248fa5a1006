"""Promotions of one model racing in several processes take turns: every alias move is judged
against the champion it replaces, so the champion only ever improves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest

from emoflow.components import mlflow_store
from emoflow.components.judging import registry
from emoflow.components.judging.promotion_lock import LOCK_TAG, PromotionBusy, promotion_lock
from emoflow.components.settings import MlflowSettings

PROMOTERS = 4
CANDIDATES = 4  # per promoter


@pytest.fixture
def store(tmp_path, monkeypatch) -> MlflowSettings:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = MlflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow_store.connect(settings, create=True)
    return settings


@pytest.mark.slow
def test_racing_promoters_only_ever_move_the_champion_up(store, tmp_path):
    scores = np.random.default_rng(7).permutation(PROMOTERS * CANDIDATES).reshape(PROMOTERS, -1)
    log = tmp_path / "moves.jsonl"
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.judging.racing_promoter", store.tracking_uri, "race"]
            + [str(log)]
            + [str(s) for s in own],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for own in scores
    ]
    try:
        outputs = [racer.communicate(timeout=600)[0] for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    assert all(r.returncode == 0 for r in racers), "\n".join(outputs)
    moves = sorted(
        (json.loads(line) for line in log.read_text().splitlines()), key=lambda m: m["at"]
    )
    assert moves[0]["before"] is None
    for previous, move in zip(moves, moves[1:], strict=False):
        assert move["before"] == previous["after"], (
            "each move judged against the champion it replaced"
        )
        assert move["after"] > move["before"]
    client = mlflow_store.connect(store)
    champion = registry.champion(client, "race")
    assert float(champion.tags["score"]) == scores.max() == moves[-1]["after"]
    assert LOCK_TAG not in client.get_registered_model("race").tags, "released"


def test_a_held_lock_makes_the_next_promoter_wait_then_fail_naming_the_holder(store):
    client = mlflow_store.connect(store)
    with promotion_lock(client, "busy", 5, 60, store):
        started = time.monotonic()
        with pytest.raises(
            PromotionBusy, match=r"busy: another promotion \(.+:\d+\) held the promotion lock"
        ):
            with promotion_lock(client, "busy", 2, 60, store):
                pass
        assert 2 <= time.monotonic() - started < 30


def test_the_lease_of_a_crashed_promoter_expires(store):
    client = mlflow_store.connect(store)
    client.create_registered_model("orphan")
    crashed = f"dead-token {time.time() - 1:.3f} elsewhere:1"  # a lease that ran out
    client.set_registered_model_tag("orphan", LOCK_TAG, crashed)
    with promotion_lock(client, "orphan", 5, 60, store) as lock:
        lock.check_held()
    assert LOCK_TAG not in client.get_registered_model("orphan").tags


def test_a_holder_whose_lease_was_taken_over_moves_nothing(store):
    client = mlflow_store.connect(store)
    with promotion_lock(client, "stolen", 5, 60, store) as lock:
        client.set_registered_model_tag("stolen", LOCK_TAG, f"thief {time.time() + 60:.3f} other:2")
        with pytest.raises(PromotionBusy, match=r"taken over by other:2"):
            lock.check_held()
    assert (
        mlflow.MlflowClient(store.tracking_uri)
        .get_registered_model("stolen")
        .tags[LOCK_TAG]
        .startswith("thief")
    )


def test_a_model_made_only_to_hold_the_lock_is_gone_when_no_version_came(store):
    """A refused first candidate registers nothing, not even an empty model of its name."""
    client = mlflow_store.connect(store)
    with promotion_lock(client, "refused", 5, 60, store):
        assert client.get_registered_model("refused").name == "refused"
    assert [m.name for m in client.search_registered_models()] == []
    with promotion_lock(client, "blessed", 5, 60, store):
        client.create_model_version("blessed", str(store.tracking_uri))
    assert [m.name for m in client.search_registered_models()] == ["blessed"]
