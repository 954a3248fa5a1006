"""Faces followed across video frames, their probabilities smoothed over time.

Per-frame predictions flicker, and a story that branches on a viewer's emotion (RIOT) needs
a steady signal, so each face is tracked across frames (greedy IoU matching), its
probabilities are smoothed with an exponential moving average, and its *dominant* emotion
is the one with the highest mean probability over the last ``window`` frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from emoflow.components.serving.detection import iou
from emoflow.components.serving.image_model import EmotionClassifier
from emoflow.components.settings import PredictSettings


@dataclass
class _Track:
    ident: int
    box: np.ndarray
    smoothed: np.ndarray
    recent: deque
    missed: int = 0


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame, as the video output reports it."""

    track: int
    box: tuple[int, int, int, int]
    probabilities: dict[str, float]  # smoothed
    emotion: str  # top smoothed emotion now
    dominant: str  # top mean probability over the window

    def record(self) -> dict:
        return {
            "track": self.track,
            "box": list(self.box),
            "emotion": self.emotion,
            "dominant": self.dominant,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        }


@dataclass
class FaceTracker:
    """Follows faces across frames and smooths each one's probabilities over time."""

    emotions: list[str]
    settings: PredictSettings
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, boxes: np.ndarray, probabilities: np.ndarray) -> list[TrackedFace]:
        """Match this frame's faces to tracks, update them, and report every face in it."""
        alpha = self.settings.ema_alpha
        matched = self._match(boxes)
        reports, updated = [], set()
        for box, p, track in zip(boxes, probabilities, matched):
            if track is None:
                track = _Track(self._next_id, box, p.copy(), deque(maxlen=self.settings.window))
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.smoothed = alpha * p + (1 - alpha) * track.smoothed
                track.box, track.missed = box, 0
            track.recent.append(p)
            updated.add(track.ident)
            reports.append(self._report(track))
        for track in self._tracks:
            if track.ident not in updated:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.settings.max_missed]
        return reports

    def boxes(self) -> np.ndarray:
        """The last box of every live track."""
        return np.array([t.box for t in self._tracks], np.int64).reshape(-1, 4)

    def _match(self, boxes: np.ndarray) -> list[_Track | None]:
        """Greedy: the best-overlapping (box, track) pair first, each used once."""
        pairs = sorted(
            (
                (iou(box, track.box), b, t)
                for b, box in enumerate(boxes)
                for t, track in enumerate(self._tracks)
            ),
            reverse=True,
        )
        matched: list[_Track | None] = [None] * len(boxes)
        used = set()
        for overlap, b, t in pairs:
            if overlap < self.settings.iou_threshold:
                break
            if matched[b] is None and t not in used:
                matched[b] = self._tracks[t]
                used.add(t)
        return matched

    def _report(self, track: _Track) -> TrackedFace:
        window_mean = np.mean(track.recent, axis=0)
        return TrackedFace(
            track=track.ident,
            box=tuple(int(v) for v in track.box),
            probabilities=dict(zip(self.emotions, track.smoothed.astype(float).tolist())),
            emotion=self.emotions[int(np.argmax(track.smoothed))],
            dominant=self.emotions[int(np.argmax(window_mean))],
        )


class FrameAnalyser:
    """Consecutive gray frames -> tracked, smoothed faces.

    Detection costs most of a frame (a Haar pass over 640x480 is ~30 ms on one CPU core,
    the network ~1 ms a face), so the whole frame is searched only every
    ``full_scan_every`` frames and, in between, only around the faces being tracked.
    """

    def __init__(self, classifier: EmotionClassifier, settings: PredictSettings):
        self.classifier = classifier
        self.settings = settings
        self.tracker = FaceTracker(classifier.emotions, settings)
        self._frames = 0

    def __call__(self, gray: np.ndarray) -> list[TrackedFace]:
        finder, known = self.classifier.finder, self.tracker.boxes()
        if self._frames % self.settings.full_scan_every == 0 or not len(known):
            faces = finder.detect(gray)
        else:
            faces = finder.at(gray, finder.boxes_near(gray, known))
        self._frames += 1
        return self.tracker.update(faces.boxes, self.classifier.probabilities(faces.crops))
