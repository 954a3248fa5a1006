"""Per-cell recipe files: what each DVC train stage depends on instead of the whole train block."""

from emoflow.components.artifacts import read_json
from emoflow.components.settings import Params
from emoflow.components.training.recipes import write_recipes


def params(tmp_path, **train) -> Params:
    return Params.model_validate(
        {"train": {"out_dir": str(tmp_path), "architectures": ["convnn", "modern"], **train}}
    )


def test_each_cell_gets_its_recipe_with_its_architectures_overrides(tmp_path):
    settings = params(
        tmp_path, emotion_sets={"pair": ["angry", "happy"]}, overrides={"modern": {"epochs": 7}}
    )
    folder = write_recipes(settings.train, settings.augment, settings.serve)
    assert sorted(p.name for p in folder.iterdir()) == ["convnn-pair.json", "modern-pair.json"]
    convnn, modern = read_json(folder / "convnn-pair.json"), read_json(folder / "modern-pair.json")
    assert (convnn["train"]["epochs"], modern["train"]["epochs"]) == (40, 7)
    assert modern["cell"] == {
        "architecture": "modern",
        "emotion_set": "pair",
        "emotions": ["angry", "happy"],
    }
    assert "overrides" not in modern["train"] and "emotion_sets" not in modern["train"]


def test_a_cell_left_out_of_the_grid_loses_its_file_and_the_others_keep_their_bytes(tmp_path):
    two_sets = params(tmp_path, emotion_sets={"pair": ["angry", "happy"], "riot": ["fear", "calm"]})
    folder = write_recipes(two_sets.train, two_sets.augment, two_sets.serve)
    before = (folder / "convnn-pair.json").read_bytes()
    one_set = params(tmp_path, emotion_sets={"pair": ["angry", "happy"]})
    write_recipes(one_set.train, one_set.augment, one_set.serve)
    assert sorted(p.name for p in folder.iterdir()) == ["convnn-pair.json", "modern-pair.json"]
    assert (folder / "convnn-pair.json").read_bytes() == before
