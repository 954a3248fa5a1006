"""Wall time and peak memory of ingest + validate + preprocess on the full FER2013 copy.

    python bench/ingest.py [DATA]

DATA is a folder laid out like ``../shared/data`` (``fer2013/fer2013.csv.gz`` and
``ckplus48/``); the default is ``$EMOFLOW_SHARED_DATA``, else ``../shared/data`` beside the
repository. The stages run in this process, one after the other, with the settings of
``params.yaml`` and outputs in a temporary folder, so the peak RSS printed is an upper bound
on each stage's own process under ``dvc repro``. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from emoflow.components.settings import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0
TARGET_BYTES = 2 * 1024**3


def main(argv: list[str]) -> int:
    data = Path(
        argv[1]
        if len(argv) > 1
        else os.environ.get("EMOFLOW_SHARED_DATA", ROOT.parent / "shared" / "data")
    )
    fer2013, ckplus = data / "fer2013" / "fer2013.csv.gz", data / "ckplus48"
    for path in (fer2013, ckplus):
        if not path.exists():
            print(
                f"{path}: not found; pass a folder like ../shared/data (or set EMOFLOW_SHARED_DATA)"
            )
            return 2
    print(f"data: {data}")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="emoflow-bench-") as tmp:
        params = stage_params(Path(tmp), fer2013, ckplus)
        start = time.perf_counter()
        rows = [_timed(name, stage, params) for name, stage in STAGES.items()]
        total = time.perf_counter() - start
    peak = _peak_rss()
    print(f"{'stage':<12}{'wall s':>8}{'peak RSS so far':>18}")
    for name, seconds, rss in rows:
        print(f"{name:<12}{seconds:>8.1f}{_gib(rss):>18}")
    met = total < TARGET_SECONDS and peak < TARGET_BYTES
    print(f"{'total':<12}{total:>8.1f}{_gib(peak):>18}")
    print(
        f"target: < {TARGET_SECONDS:.0f} s and < {_gib(TARGET_BYTES)}: {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


def stage_params(work: Path, fer2013: Path, ckplus: Path) -> Params:
    """params.yaml's settings, with the real data as input and every output under ``work``."""
    params = load_params(ROOT / "params.yaml")
    return params.model_copy(
        update={
            "ingest": params.ingest.model_copy(
                update={"fer2013": fer2013, "ckplus": ckplus, "out_dir": work / "interim"}
            ),
            "validate_": params.validate_.model_copy(
                update={"out_dir": work / "reports" / "validation"}
            ),
            "preprocess": params.preprocess.model_copy(update={"out_dir": work / "processed"}),
            "augment": params.augment.model_copy(
                update={"grid_png": work / "reports" / "grid.png"}
            ),
        }
    )


# Imports are inside the stages so that each stage's time includes what it loads (TensorFlow
# for preprocess), as it does when DVC runs the stage as `emoflow <stage>`.


def _ingest(params: Params) -> None:
    from emoflow.components.ingest.stage import ingest

    ingest(params.ingest)


def _interim(params: Params) -> dict[str, Path]:
    return {name: params.ingest.out_dir / name for name in ("fer2013", "ckplus")}


def _validate(params: Params) -> None:
    from emoflow.components.validate.stage import validate

    validate(_interim(params), params.validate_)


def _preprocess(params: Params) -> None:
    from emoflow.components.records.preprocess import preprocess

    preprocess(_interim(params), params.preprocess, params.augment)


STAGES: dict[str, Callable[[Params], None]] = {
    "ingest": _ingest,
    "validate": _validate,
    "preprocess": _preprocess,
}


def _timed(name: str, stage: Callable[[Params], None], params: Params) -> tuple[str, float, int]:
    start = time.perf_counter()
    stage(params)
    return name, time.perf_counter() - start, _peak_rss()


def _peak_rss() -> int:
    """Peak resident memory in bytes of this process or any child it waited for (Linux: KiB)."""
    usage = (
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return max(usage) * 1024


def _gib(size: float) -> str:
    return f"{size / 1024**3:.2f} GiB"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if cpuinfo.exists()
        else []
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = models[0] if models else platform.processor() or "unknown CPU"
    return f"{cores} cores, {model}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
