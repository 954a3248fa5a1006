"""The REST server under abusive requests: its peak memory, and ordinary requests' latency.

    python bench/serve_attack.py [--server mlflow|emoflow|both] [--seconds 60] [--clients 6]
                                 [--json OUT]

Replays the cases of issue 13 against ``mlflow models serve`` (one worker, ``-t 20``) and
``emoflow serve`` (MLflow's scoring app behind our body limit and request gate,
``components.serving.rest_server``; the same 20 s server timeout), one after the other, on
loopback, serving the tiny model the serving tests register (the default architecture after
a few steps: speed and memory do not depend on accuracy) with the default ``serve:`` limits:

- ``zeros``: one request of 64 PNGs of zeros, 6000x6600 each (3.3 MB in all), then two at once;
- ``crops``: 10,000 face crops as one JSON array (~47 MB);
- ``json array``: one gray image as a 32 MB JSON array of pixels (within the limits);
- ``at the limits``: two 6000x6600 PNGs (79 Mpx, under the 100 Mpx per request);
- ``deadline``: 64 textured 1-megapixel JPEGs (~80 s of face search): the request must stop
  at the server's timeout, and the server's CPU with it;
- ``abusive load``: ``--clients`` clients looping requests of two 40-megapixel JPEGs each
  while one client sends ordinary requests (a 640x480 JPEG with one face) one after another.

Ordinary requests are timed alone first (``baseline``), after a second of ``idle``. Peak
RSS: the server's processes (for mlflow, the ``mlflow`` command and its uvicorn worker),
summed, sampled every 50 ms, the peak per phase. Exit status 1 when a target is missed by
``emoflow serve`` (by ``mlflow models serve`` when it runs alone): peak RSS under 1.5 GB,
ordinary p99 under 2 s under the abusive load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoflow.components.settings import ServeSettings  # noqa: E402 (after the sys.path line above)
from tests.consumers import (  # noqa: E402 (after the sys.path line above)
    canvas_with_faces,
    detectable_crops,
    png,
    register_tiny_model,
)
from tests.processes import free_ports, started  # noqa: E402 (after the sys.path line above)

SERVER_TIMEOUT_S = 20
TARGET_RSS_BYTES = 1.5e9
TARGET_P99_S = 2.0
JSON = "application/json"
SERVERS = ("mlflow", "emoflow")


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    names = SERVERS if args.server == "both" else (args.server,)
    bodies = Bodies()
    figures = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        model_uri = register_tiny_model(folder, tracking_uri, serve=ServeSettings())
        for name in names:
            with served(name, model_uri, tracking_uri, folder, args.params) as (url, server_pids):
                figures[name] = attack(url, server_pids, bodies, args)
            _print(name, figures[name])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nmachine: {figures['machine']}")
    judged = figures["emoflow" if "emoflow" in figures else "mlflow"]
    load = judged["phases"]["abusive load"]["ordinary"]
    return int(judged["peak_rss_bytes"] > TARGET_RSS_BYTES or load["p99_s"] > TARGET_P99_S)


def attack(url: str, server_pids: Callable[[], list[int]], bodies: Bodies, args) -> dict:
    """Every case against one server, one after another; each phase's figures."""
    memory = MemorySampler(server_pids)
    figures = {"load_average_before": os.getloadavg(), "phases": memory.phases}
    with memory.phase("idle"):
        time.sleep(1)
    with memory.phase("baseline") as phase:
        phase.update(_latency([post(url, bodies.ordinary) for _ in range(30)]))
    for name, body, at_once in (
        ("zeros, one request", bodies.zeros, 1),
        ("zeros, two at once", bodies.zeros, 2),
        ("crops", bodies.crops, 1),
        ("json array", bodies.json_array, 1),
        ("at the limits", bodies.at_limits, 1),
    ):
        with memory.phase(name) as phase:
            phase.update(concurrent_posts(url, body, at_once))
    with memory.phase("deadline") as phase:
        phase.update(deadline(url, bodies.slow, server_pids))
    with memory.phase("abusive load") as phase:
        phase.update(abusive_load(url, bodies, args.clients, args.seconds))
    figures["load_average_after"] = os.getloadavg()
    figures["peak_rss_bytes"] = memory.overall
    return figures


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the abusive load")
    parser.add_argument("--clients", type=int, default=6, help="abusive clients at once")
    parser.add_argument(
        "--server", choices=(*SERVERS, "both"), default="both", help="the server(s) attacked"
    )
    parser.add_argument(
        "--params", type=Path, default=ROOT / "params.yaml", help="emoflow serve's settings"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


# --- The server ----------------------------------------------------------------------------


@contextlib.contextmanager
def served(
    name: str, model_uri: str, tracking_uri: str, folder: Path, params: Path
) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """The registered model served by ``name``; its URL, and a function listing its processes."""
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        # the same server timeout for both: mlflow's -t sets this variable for its workers
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(SERVER_TIMEOUT_S),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    if name == "mlflow":
        command = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", str(port), "-w", "1", "-t", str(SERVER_TIMEOUT_S)]
    else:
        command = ["emoflow", "serve", "-m", model_uri, "--port", str(port)]
        command += ["--params", str(params)]
    with started({name: command}, folder, {name: env}, folder / "logs") as processes:
        leader = processes[name].pid
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url)
        yield url, lambda: session_pids(leader)


def _wait_until_up(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the model server did not answer within {timeout:.0f} s")


def session_pids(session: int) -> list[int]:
    """The processes of a session (the server leads its own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the fields after the command's closing parenthesis: state ppid pgrp session
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[3]) == session:
                    pids.append(int(entry.name))
    return pids


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class MemorySampler:
    """The server's summed RSS every 50 ms while a phase runs; each phase's figures with its
    peak (``peak_rss_mb``), and the peak of all."""

    def __init__(self, pids: Callable[[], list[int]]):
        self._pids = pids
        self.phases: dict[str, dict] = {}
        self.overall = 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict]:
        figures, peak, stop = self.phases.setdefault(name, {}), [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], sum(_rss(pid) for pid in self._pids()))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            yield figures
        finally:
            stop.set()
            sampler.join()
            figures["peak_rss_mb"] = round(peak[0] / 1e6)
            self.overall = max(self.overall, peak[0])


# --- What the clients send -----------------------------------------------------------------


class Bodies:
    """Each case's request body, encoded once."""

    def __init__(self):
        (crop,) = detectable_crops(1)
        photo, _ = canvas_with_faces([crop])
        self.ordinary = _images_body([_jpeg(photo)])
        zeros = png(np.zeros((6600, 6000), np.uint8))
        self.zeros = _images_body([zeros] * 64)
        self.at_limits = _images_body([zeros] * 2)
        crops = np.zeros((10_000, 48, 48), np.uint8).tolist()
        self.crops = json.dumps({"inputs": crops}).encode()
        side = 3264  # "0, " per pixel: a 32 MB array
        self.json_array = json.dumps({"inputs": [np.zeros((side, side), np.uint8).tolist()]})
        self.json_array = self.json_array.encode()
        self.slow = _images_body([_jpeg(_texture(1000, 1000, seed)) for seed in range(64)])
        self.abusive = _images_body([_jpeg(_texture(5200, 7690, seed)) for seed in range(2)])


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth noise: costly to search (Haar's early stages pass on texture) and to encode."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def _images_body(images: list[bytes]) -> bytes:
    rows = [[base64.b64encode(image).decode()] for image in images]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


# --- The cases -----------------------------------------------------------------------------


def post(url: str, body: bytes, timeout: float = 120.0) -> tuple[int, float, str]:
    """Status, seconds and the start of the answer's message, of one request."""
    started_at = time.monotonic()
    try:
        response = requests.post(
            f"{url}/invocations", data=body, headers={"Content-Type": JSON}, timeout=timeout
        )
    except requests.RequestException as err:
        return 0, time.monotonic() - started_at, type(err).__name__
    seconds = time.monotonic() - started_at
    if response.status_code == 200:
        return 200, seconds, ""
    try:
        message = response.json().get("message", "")
    except requests.JSONDecodeError:  # MLflow's own 504 is plain text
        message = response.text
    return response.status_code, seconds, str(message)[:120]


def _latency(results: list[tuple[int, float, str]]) -> dict:
    seconds = np.array([s for _, s, _ in results]) if results else np.zeros(1)
    return {
        "requests": len(results),
        "statuses": dict(Counter(status for status, _, _ in results)),
        "p50_s": round(float(np.percentile(seconds, 50)), 3),
        "p99_s": round(float(np.percentile(seconds, 99)), 3),
        "max_s": round(float(seconds.max()), 3),
    }


def concurrent_posts(url: str, body: bytes, at_once: int) -> dict:
    results: list[tuple[int, float, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(post(url, body))) for _ in range(at_once)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "request_mb": round(len(body) / 1e6, 1),
        "answers": [
            f"{status} in {seconds:.2f} s: {message}" for status, seconds, message in results
        ],
    }


def deadline(url: str, body: bytes, pids: Callable[[], list[int]]) -> dict:
    """The answer to ~80 s of work, and the server's CPU seconds in the 10 s after it."""
    status, seconds, message = post(url, body)
    before = _cpu_seconds(pids())
    time.sleep(10)
    return {
        "answer": f"{status} in {seconds:.1f} s: {message}",
        "server_cpu_s_in_10_s_after": round(_cpu_seconds(pids()) - before, 2),
    }


def abusive_load(url: str, bodies: Bodies, clients: int, seconds: float) -> dict:
    stop = threading.Event()
    abusive: list[tuple[int, float, str]] = []

    def loop() -> None:
        while not stop.is_set():
            abusive.append(post(url, bodies.abusive))

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the abusive clients first
    ordinary = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ordinary.append(post(url, bodies.ordinary))
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "abusive_request_mb": round(len(bodies.abusive) / 1e6, 1),
        "ordinary": _latency(ordinary),
        "abusive": _latency(abusive),
    }


def _print(name: str, figures: dict) -> None:
    print(f"\n=== {name}: load average before {figures['load_average_before']}")
    for phase_name, phase in figures["phases"].items():
        print(f"\n{phase_name}:")
        for key, value in phase.items():
            print(f"  {key}: {value}")
    print(f"\npeak RSS of the server, all phases: {figures['peak_rss_bytes'] / 1e6:.0f} MB")
    print(f"load average after {figures['load_average_after']}")


if __name__ == "__main__":
    sys.exit(main())
