"""Third-party chatter silenced at the entry points, so that a command shows its progress and
what it did; ``emoflow --verbose`` skips all of this.

- TensorFlow's C++ libraries log through absl before absl's logging is set up, so no setting
  reaches the lines they print while loading ("All log messages before absl::InitializeLog()
  ...", "Could not find cuda drivers ..."), nor, at ``TF_CPP_MIN_LOG_LEVEL`` 2, the failed
  ``cuInit`` of a machine without a GPU driver. Those known lines are dropped from file
  descriptor 2 while TensorFlow is imported and its devices listed: whenever the first
  ``import tensorflow`` happens, so a command that never needs it never pays for it. Every
  other line passes through as it comes.
- ``TF_CPP_MIN_LOG_LEVEL`` 2 (unless the environment sets it) hides TensorFlow's C++ info and
  warnings, and MLflow's own level hides its info lines (creating tables, experiments).
- The Python warnings every stage repeated are silenced by their exact messages
  (:data:`KNOWN_WARNINGS`); any other warning still shows. Warnings are dropped where they
  are shown, not by a filter: MLflow puts its own filter in front of any other while it
  checks a model class.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

# Lines the C++ libraries write to stderr on a machine without CUDA, and TFLite's notice.
NOISE_LINES = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
)
# Warnings each run repeated, which say nothing to act on.
KNOWN_WARNINGS = re.compile(
    # MLflow, at every model logged and loaded: the pyfunc model takes any input on purpose.
    r".*Add type hints to the `predict` method"
    # Keras, at every fit: training data is a shuffled tf.data pipeline of unknown length.
    r"|`shuffle=True` was passed, but will be ignored"
    r"|Your input ran out of data; interrupting training"
    # TensorFlow, at every export: its parity check runs the TFLite file as a mobile app would.
    r"|\s*Warning: tf\.lite\.Interpreter is deprecated"
)

_quiet = False


def quiet() -> None:
    """Silence the known chatter for the rest of the process (idempotent)."""
    global _quiet
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # AutoGraph's "could not transform <lambda>" and TensorFlow's deprecation notices.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if not isinstance(warnings.showwarning, _ShownUnlessKnown):
        warnings.showwarning = _ShownUnlessKnown(warnings.showwarning)
    # A Prefect flow run sends warnings through logging (``logging.captureWarnings``).
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, _KnownWarningRecords) for f in captured.filters):
        captured.addFilter(_KnownWarningRecords())
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its temporary folders
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    _quiet = True


@contextlib.contextmanager
def library_messages_hidden() -> Iterator[None]:
    """Around work that makes libraries print what they did step by step (export: Keras lists a
    SavedModel's endpoints and every captured tensor on stdout, TFLite announces its
    delegate): Keras' messages go to its log instead, and the known lines are dropped. Keras'
    progress bars print the same way, so this is only for work that has none."""
    if not _quiet:
        yield
        return
    import keras

    keras.config.disable_interactive_logging()
    try:
        with filtered_stderr():
            yield
    finally:
        keras.config.enable_interactive_logging()


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern[bytes] = NOISE_LINES) -> Iterator[None]:
    """File descriptor 2, what C++ code writes to as well as Python, without lines matching
    ``noise``: a thread passes every other line on as it comes."""
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None:
            stream.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    relay = threading.Thread(target=_relay, args=(read_end, original, noise), daemon=True)
    relay.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        for stream in (sys.stderr, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os.dup2(original, 2)  # the pipe's last writer closes: the relay reads to its end
        relay.join()
        os.close(original)


def _relay(source: int, target: int, noise: re.Pattern[bytes]) -> None:
    pending = b""
    with os.fdopen(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not noise.match(line)]
            if kept:
                os.write(target, b"".join(kept))
    if pending and not noise.match(pending):
        os.write(target, pending)


class _ShownUnlessKnown:
    def __init__(self, show):
        self.show = show

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not KNOWN_WARNINGS.match(str(message)):
            self.show(message, category, filename, lineno, file, line)


class _KnownWarningRecords(logging.Filter):
    """Drops the log records of known warnings (``logging.captureWarnings`` formats each as
    ``file:line: Category: message``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(KNOWN_WARNINGS.match(part) for part in record.getMessage().split(": "))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` (and its listing of devices, where a CPU machine
    logs the failed cuInit) inside :func:`filtered_stderr`, then leaves the import system."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its own loader: importlib.resources and others look at it.
        module.__spec__.loader = module.__loader__ = self.loader
        with filtered_stderr():
            self.loader.exec_module(module)
            # Listing devices initialises the platforms (cuInit) but not TensorFlow's runtime:
            # thread and device settings can still be made after it.
            module.config.list_physical_devices("GPU")
