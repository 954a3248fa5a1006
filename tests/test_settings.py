from pathlib import Path

import pytest

from emoflow.components.settings import ParamsError, load_params
from tests.conftest import ROOT, write_params


def test_project_params_load_into_typed_settings(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")
    assert params.train.emotion_sets["fer7"] == (
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    )
    assert [cell.key for cell in params.train.grid()] == ["convnn-fer7"]
    assert params.validate_.required_splits == ["train", "val", "test"]
    assert params.ingest.fer2013 == Path("data/sample/fer2013.csv")  # beside params.yaml


def test_unknown_key_is_named(tmp_path):
    path = write_params(tmp_path, {"train": {"epochz": 3}})
    with pytest.raises(ParamsError, match=r"train\.epochz: Extra inputs are not permitted"):
        load_params(path)


def test_unknown_block_is_named(tmp_path):
    path = write_params(tmp_path, {"trian": {"epochs": 3}})
    with pytest.raises(ParamsError, match=r"trian"):
        load_params(path)


def test_bad_value_is_named(tmp_path):
    path = write_params(tmp_path, {"train": {"epochs": 0}})
    with pytest.raises(
        ParamsError, match=r"train\.epochs: Input should be greater than or equal to 1"
    ):
        load_params(path)


def test_unknown_emotion_is_named(tmp_path):
    path = write_params(tmp_path, {"train": {"emotion_sets": {"odd": ["angry", "bored"]}}})
    with pytest.raises(ParamsError, match=r"train\.emotion_sets.*unknown emotion 'bored'"):
        load_params(path)


def test_calm_is_neutral(tmp_path):
    path = write_params(tmp_path, {"train": {"emotion_sets": {"riot": ["fear", "anger", "calm"]}}})
    assert load_params(path).train.emotion_sets["riot"] == ("fear", "angry", "neutral")


def test_grid_is_architectures_times_emotion_sets(tmp_path):
    path = write_params(
        tmp_path,
        {
            "train": {
                "emotion_sets": {"riot": ["fear", "anger", "calm"], "pair": ["anger", "disgust"]}
            }
        },
    )
    params = load_params(path)
    assert [c.key for c in params.train.grid()] == ["convnn-fer7", "convnn-riot", "convnn-pair"]
    assert params.promote.registered_name(params.train.grid()[1]) == "emoflow-riot"


def test_usage_fractions_must_sum_to_one(tmp_path):
    path = write_params(
        tmp_path, {"sample": {"usage_fractions": {"Training": 0.5, "PublicTest": 0.1}}}
    )
    with pytest.raises(ParamsError, match=r"sample\.usage_fractions.*sum to 1"):
        load_params(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")


def test_faces_and_sequences_cannot_share_a_registered_model(tmp_path):
    path = write_params(tmp_path, {"train": {"architectures": ["convnn", "timedelay"]}})
    with pytest.raises(
        ParamsError,
        match=r"convnn-fer7 \(faces\) and timedelay-fer7 \(sequences\) the same registered model "
        r"'emoflow-fer7'; put \{architecture\} in it",
    ):
        load_params(path)
    path = write_params(
        tmp_path,
        {
            "train": {"architectures": ["convnn", "timedelay"]},
            "promote": {"model_name": "emoflow-{architecture}-{emotion_set}"},
        },
    )
    assert [
        load_params(path).promote.registered_name(c) for c in load_params(path).train.grid()
    ] == [
        "emoflow-convnn-fer7",
        "emoflow-timedelay-fer7",
    ]


def test_the_real_data_profile_points_at_the_data_folder_and_calibrates_the_gate():
    params = load_params(ROOT / "params.yaml", ["real-data"], "/data/fer")
    assert params.ingest.fer2013 == Path("/data/fer/fer2013/fer2013.csv.gz")
    assert params.ingest.ckplus == Path("/data/fer/ckplus48")
    assert params.train.architectures == ["modern"]
    assert params.evaluate.tta == "ten_crop"
    thresholds = params.promote.value_thresholds
    assert thresholds["fer2013.ece"].upper_bound == 0.1
    assert thresholds["fer2013.accuracy"] == 0.62
    # Untouched blocks keep the base values.
    assert params.mlflow == load_params(ROOT / "params.yaml").mlflow


def test_profiles_apply_in_order_and_nested_blocks_merge_key_by_key(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml", ["real-data", "gpu"])
    recipe = params.train.recipe("modern")
    assert recipe.modern.widths == (64, 128, 256, 512)
    assert (recipe.lr_schedule, recipe.time_budget_minutes) == ("plateau", None)
    assert params.ingest.fer2013 == Path("../shared/data/fer2013/fer2013.csv.gz")


def test_an_unknown_profile_is_named_with_the_known_ones():
    with pytest.raises(ParamsError, match=r"no profile realdata \(known: gpu, real-data\)"):
        load_params(ROOT / "params.yaml", ["realdata"])


def test_a_broken_profile_fails_every_load_with_its_name(tmp_path):
    path = write_params(tmp_path, {"profiles": {"fast": {"train": {"epochs": 0}}}})
    with pytest.raises(ParamsError, match=r"profile fast: invalid settings\n  train\.epochs"):
        load_params(path)


def test_relative_locations_are_relative_to_the_params_files_folder(tmp_path, monkeypatch):
    """As DVC runs every stage from the project root: defaults, overrides and a relative
    sqlite store included; URIs and absolute paths stay as they are."""
    project = tmp_path / "project"
    project.mkdir()
    path = write_params(
        project,
        {
            "train": {"overrides": {"transfer": {"transfer": {"weights": "weights/v3.h5"}}}},
            "serve": {"detector_model": "/abs/cascade.xml"},
            "predict": {"model": "models/convnn-fer7"},
        },
    )
    monkeypatch.chdir(tmp_path)
    params = load_params(Path("project/params.yaml"))
    assert params.ingest.fer2013 == Path("project/data/sample/fer2013.csv")
    assert params.flow == load_params(path).flow
    assert params.evaluate.out_dir == Path("project/reports/evaluation")  # a default
    assert params.train.recipe("transfer").transfer.weights == Path("project/weights/v3.h5")
    assert params.serve.detector_model == Path("/abs/cascade.xml")
    assert params.predict.model == "project/models/convnn-fer7"
    assert params.mlflow.tracking_uri == "sqlite:///project/mlflow.db"
    assert load_params(path).mlflow.tracking_uri == f"sqlite:///{project}/mlflow.db"

    monkeypatch.chdir(project)
    here = load_params("params.yaml")
    assert here.ingest.fer2013 == Path("data/sample/fer2013.csv"), "unchanged from the root"
    assert load_params(path) == here, "however the file is spelled: stages write paths out"
    assert (here.mlflow.tracking_uri, here.predict.model) == (
        "sqlite:///mlflow.db",
        "models/convnn-fer7",
    )


def test_the_data_folder_of_profiles_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    given = load_params(ROOT / "params.yaml", ["real-data"], "mydata")
    assert given.ingest.ckplus == tmp_path / "mydata/ckplus48"
    default = load_params(ROOT / "params.yaml", ["real-data"])
    assert default.ingest.ckplus == ROOT / "../shared/data/ckplus48"
