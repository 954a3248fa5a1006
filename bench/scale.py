"""Cost against data size: ingest, validate and preprocess on 30k, 300k and 1M FER2013 images.

    python bench/scale.py [--sizes 30000 300000 1000000] [--workdir DIR] [--keep] [--json OUT]

For each size, a FER2013-format csv is written by the sample generator's fast path
(``components.sample.generate.write_large_fer2013``: seeded, so every run reads the same
file), then each stage runs the component function the pipeline runs
(``bench/ingest.py``'s ``STAGES``, with ``params.yaml``'s settings and the big csv as
``ingest.fer2013``; CK+ is the small built-in sample at every size). Every stage runs in a
fresh process, so its wall time includes its imports, as under ``dvc repro``, and its peak
RSS (``wait4``'s ``ru_maxrss`` of that process) is its own. The goal is time linear in the
number of images and memory that does not grow with them.

The work folder (a temporary one under /tmp unless ``--workdir``) holds ~13 GB at 1M images;
it is removed at the end unless ``--keep``, and a size's outputs are removed before the next
size runs. A kept csv is reused by a later run with the same ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ingest import STAGES, machine, stage_params  # bench/ingest.py: the same stages and settings

from emoflow.components.settings import SampleSettings

SIZES = (30_000, 300_000, 1_000_000)
SEED = 2018
GENERATE = "generate csv"  # not a pipeline stage: what the inputs cost to make
CHILD_ENV = {
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


@dataclass(frozen=True)
class Measurement:
    images: int
    stage: str
    seconds: float
    peak_rss_mb: float
    images_per_s: float
    load_before: float  # 1-minute load average when the stage started
    load_after: float


def main() -> int:
    args = _arguments()
    if args.stage:
        return _run_stage(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="emoflow-scale-", dir="/tmp"))
    print(f"machine: {machine()}; work folder: {workdir}", flush=True)
    try:
        measured = [m for size in args.sizes for m in _measure_size(size, workdir)]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(_table(measured))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "runs": [asdict(m) for m in measured]}, indent=2)
            + "\n"
        )
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="images")
    parser.add_argument("--workdir", type=Path, help="default: a new folder under /tmp")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    # One stage in this process: how the parent runs each stage in a fresh process.
    parser.add_argument("--stage", choices=[GENERATE, *STAGES], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def _measure_size(size: int, workdir: Path) -> list[Measurement]:
    """Every stage on ``size`` images, each in its own process; the outputs go afterwards."""
    print(f"--- {size:,} images", flush=True)
    measured = [_in_child(size, stage, workdir) for stage in (GENERATE, *STAGES)]
    for folder in ("interim", "processed", "reports"):
        print(f"{folder}: {_gb(_size_on_disk(_outputs(workdir, size) / folder))}")
    shutil.rmtree(_outputs(workdir, size), ignore_errors=True)
    return measured


def _in_child(size: int, stage: str, workdir: Path) -> Measurement:
    """Run one stage in a fresh process and take its own wall time and peak RSS."""
    command = [sys.executable, __file__, "--stage", stage, "--images", str(size)]
    command += ["--workdir", str(workdir)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **CHILD_ENV})
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{stage} on {size:,} images exited with {child.returncode}")
    measurement = Measurement(
        images=size,
        stage=stage,
        seconds=round(seconds, 1),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        images_per_s=round(size / seconds),
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )
    print(f"{stage}: {measurement.seconds} s, {measurement.peak_rss_mb} MB", flush=True)
    return measurement


def _run_stage(args: argparse.Namespace) -> int:
    """The child's side: one stage on the inputs of ``args.images`` under ``args.workdir``."""
    from emoflow.components.sample.generate import generate_sample, write_large_fer2013

    csv = args.workdir / "inputs" / f"fer2013-{args.images}-seed{SEED}.csv"
    ckplus = args.workdir / "inputs" / "sample" / "ckplus48"
    if args.stage == GENERATE:
        csv.parent.mkdir(parents=True, exist_ok=True)
        write_large_fer2013(csv, args.images, SEED)
        if not ckplus.is_dir():
            generate_sample(SampleSettings(out_dir=ckplus.parent, images_per_class=3, seed=SEED))
        return 0
    STAGES[args.stage](stage_params(_outputs(args.workdir, args.images), csv, ckplus))
    return 0


def _outputs(workdir: Path, size: int) -> Path:
    return workdir / f"run-{size}"


def _size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def _table(measured: list[Measurement]) -> str:
    lines = [
        f"{'images':>10}  {'stage':<13}{'seconds':>9}{'peak RSS MB':>13}{'images/s':>10}"
        f"{'load':>12}"
    ]
    lines += [
        f"{m.images:>10,}  {m.stage:<13}{m.seconds:>9.1f}{m.peak_rss_mb:>13.0f}"
        f"{m.images_per_s:>10,}{f'{m.load_before:.1f}-{m.load_after:.1f}':>12}"
        for m in measured
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
