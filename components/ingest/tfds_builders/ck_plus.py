"""TFDS builder of CK+ from the original distribution or the CK+48 crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from emoflow.components.ingest.stage import read_ckplus
from emoflow.components.ingest.tfds_builders.features import (
    BUILDERS_DIR,
    HOMEPAGE,
    examples,
    features,
    splits,
)
from emoflow.components.settings import IngestSettings

CITATION = """@inproceedings{lucey2010extended,
  title={The Extended Cohn-Kanade Dataset (CK+): A complete dataset for action unit and emotion-specified expression},
  author={Lucey, Patrick and Cohn, Jeffrey F. and Kanade, Takeo and Saragih, Jason and Ambadar, Zara and Matthews, Iain},
  booktitle={CVPR Workshops},
  year={2010}
}"""


class CkPlus(tfds.core.GeneratorBasedBuilder):
    """CK+: posed expression sequences; peak frames labelled, first neutral, split by subject."""

    VERSION = tfds.core.Version("1.0.0")
    pkg_dir_path = BUILDERS_DIR
    code_path = tfds.core.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "First release, parsed by EmoFlow's ingest stage."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    CK+ is distributed by the University of Pittsburgh after signing its agreement
    (www.jeffcohn.net/Resources). Put into the manual dir either the original
    distribution, cohn-kanade-images/ and Emotion/ (faces are cropped with OpenCV), or
    the CK+48 crops, one folder per emotion (anger, contempt, disgust, fear, happy,
    sadness, surprise) of S<subject>_<sequence>_<frame>.png files.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features(
                subject=tfds.features.Text(),
                fold=tfds.features.Scalar(
                    dtype=np.int64, doc="10-fold cross-validation fold, by subject"
                ),
            ),
            supervised_keys=("image", "label"),
            homepage=HOMEPAGE,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = Path(dl_manager.manual_dir)
        dataset = read_ckplus(manual, IngestSettings(ckplus=manual))
        return {
            split: self._generate_examples(dataset=dataset, split=split)
            for split in splits(dataset)
        }

    def _generate_examples(self, dataset, split):
        return examples(dataset, split, "subject", "fold")
