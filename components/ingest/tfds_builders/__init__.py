"""TensorFlow Datasets builders for FER2013 and CK+ that parse the raw files with ingest.

Importing this package registers ``fer2013`` and ``ck_plus`` with TFDS. Build them from
Python (the ``tfds`` command line needs apache-beam)::

    import tensorflow_datasets as tfds
    from emoflow.components.ingest.tfds_builders import Fer2013

    builder = Fer2013(data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/fer2013")
    )
    train = builder.as_dataset(split="train")  # or tfds.load("fer2013", data_dir=...)

Both read the files with the same functions as the ``ingest`` stage, so a TFDS user and
the pipeline see the same images, labels and splits (those of ``IngestSettings()``).
"""

from emoflow.components.ingest.tfds_builders.ck_plus import CkPlus
from emoflow.components.ingest.tfds_builders.fer2013 import Fer2013

__all__ = ["CkPlus", "Fer2013"]
