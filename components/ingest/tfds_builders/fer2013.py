"""TFDS builder of FER2013 (and its FER+ labels) from the files Kaggle and Microsoft ship."""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.stage import read_fer2013
from emoflow.components.ingest.tfds_builders.features import (
    BUILDERS_DIR,
    HOMEPAGE,
    examples,
    features,
    splits,
)
from emoflow.components.settings import IngestSettings

CSV_NAMES = ("fer2013.csv.gz", "fer2013.csv")
FERPLUS_NAME = "fer2013new.csv"

CITATION = """@inproceedings{goodfellow2013challenges,
  title={Challenges in Representation Learning: A report on three machine learning contests},
  author={Goodfellow, Ian J. and others},
  booktitle={ICONIP},
  year={2013}
}
@inproceedings{BarsoumICMI2016,
  title={Training Deep Networks for Facial Expression Recognition with Crowd-Sourced Label Distribution},
  author={Barsoum, Emad and Zhang, Cha and Canton Ferrer, Cristian and Zhang, Zhengyou},
  booktitle={ICMI},
  year={2016}
}"""


class Fer2013(tfds.core.GeneratorBasedBuilder):
    """FER2013: 48x48 grey web faces, 7 emotions; the ``ferplus`` config relabels by FER+ votes."""

    VERSION = tfds.core.Version("1.0.0")
    pkg_dir_path = BUILDERS_DIR
    code_path = tfds.core.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "First release, parsed by EmoFlow's ingest stage."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="original", description="The labels of fer2013.csv (or of the class folders)."
        ),
        tfds.core.BuilderConfig(
            name="ferplus",
            description=(
                "FER+ majority-vote labels (8 emotions, contempt included); "
                "images without a majority are left out."
            ),
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download FER2013 from Kaggle (the ICML 2013 challenge: fer2013.csv, or the image-folder
    copy with train/<class>/*.png and test/<class>/*.png) and put into the manual dir
    either {" or ".join(CSV_NAMES)}, or the train/ and test/ folders.
    For the `ferplus` config also put {FERPLUS_NAME} (github.com/microsoft/FERPlus) there;
    it is row-aligned with fer2013.csv, so it needs the csv.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features(),
            supervised_keys=("image", "label"),
            homepage=HOMEPAGE,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = Path(dl_manager.manual_dir)
        source = _source(manual)
        ferplus = manual / FERPLUS_NAME if self.builder_config.name == "ferplus" else None
        dataset = read_fer2013(source, IngestSettings(fer2013=source, ferplus=ferplus))
        return {
            split: self._generate_examples(dataset=dataset, split=split)
            for split in splits(dataset)
        }

    def _generate_examples(self, dataset, split):
        return examples(dataset, split)


def _source(manual: Path) -> Path:
    """The csv if there is one, else the manual dir itself as the image-folder layout."""
    for name in CSV_NAMES:
        if (manual / name).is_file():
            return manual / name
    if (manual / "train").is_dir():
        return manual
    raise IngestError(
        f"{manual}: holds neither {' nor '.join(CSV_NAMES)} nor train/ and test/ folders"
    )
