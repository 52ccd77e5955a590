"""The TOML run configuration: defaults, checks located by file/line/field, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from dposhap.config import RunConfig, apply_overrides, config_from_dict, load_config
from dposhap.errors import ConfigError
from dposhap.run import config_hash

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_fix_what_trl_gets_wrong_for_per_source_lora() -> None:
    cfg = load_config(None)
    assert cfg.world is not None and cfg.world.name == "toy"
    assert cfg.dpo.learning_rate > 1e-5  # TRL's 1e-6 barely moves an adapter
    assert cfg.dpo.gradient_checkpointing is False
    assert cfg.model.precision == "auto" and cfg.model.trust_remote_code is False
    assert cfg.lora.target_modules == "all-linear"


def test_example_toy_config_loads() -> None:
    cfg = load_config(EXAMPLES / "toy.toml")
    assert cfg.worlds["toy"].sources == ["helpful", "harmless", "noisy", "adversarial"]
    assert cfg.dpo.learning_rate == 1e-3
    assert cfg.base_dir == EXAMPLES


def test_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nbase = 'toy'\n\n[dpo]\nbeta = 0.1\nlearnig_rate = 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.file == str(path) and err.value.line == 6 and err.value.field == "dpo.learnig_rate"
    assert "learning_rate" in str(err.value)  # the valid keys are listed


def test_unknown_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[modle]\nbase = 'toy'\n")
    with pytest.raises(ConfigError, match=r"unknown table") as err:
        load_config(path)
    assert err.value.line == 1 and err.value.field == "modle"


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        ("[dpo]\nbeta = 'high'\n", "dpo.beta", 2, "wrong type"),
        ("[dpo]\nbeta = -0.1\n", "dpo.beta", 2, "> 0"),
        ("[dpo]\nloss_type = 'sigmod'\n", "dpo.loss_type", 2, "'sigmoid'"),
        ("[dpo]\nmax_steps = 0\n", "dpo.max_steps", 2, "-1"),
        ("[lora]\ntarget_modules = ['q_proj', 'lm_head']\n", "lora.target_modules", 2, "LM head"),
        ("[lora]\ndropout = 1.5\n", "lora.dropout", 2, "[0, 1)"),
        ("[data]\n\nheldout_fraction = 1.0\n", "data.heldout_fraction", 3, "strictly between 0 and 1"),
        ("[data]\nmin_pairs = 1\n", "data.min_pairs", 2, "integer >= 2"),
        ("[data]\nselect = []\n", "data.select", 2, "is empty: name at least one source"),
        ("[data]\nfiles = ['a.jsonl']\nprompt_column = 'chosen'\n", "data.prompt_column", 3, "different columns"),
        ("[data]\nheldout_min = 2\n", "data.heldout_min", 2, "unknown key"),
        ("[model]\ndevice = 'tpu'\n", "model.device", 2, "'cuda'"),
        ("[model]\ntrust_remote_code = 'yes'\n", "model.trust_remote_code", 2, "bool"),
        ("[toy]\nsources = []\n", "toy.sources", 2, "at least one"),
    ],
)
def test_bad_values_are_located(tmp_path: Path, text: str, field: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == field
    assert err.value.line == line
    assert words in str(err.value)
    assert str(err.value).startswith(f"{path}:{line} field {field!r}: ")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(write(tmp_path, "[dpo]\nbeta = \n"))
    assert err.value.line == 2
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_data_sources_table_and_relative_base_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nbase = 'm'\n[data.sources]\na = 'a.jsonl'\nb = ['b1.jsonl', 'b2.jsonl']\n")
    cfg = load_config(path)
    assert cfg.data.sources == {"a": "a.jsonl", "b": ["b1.jsonl", "b2.jsonl"]}
    assert cfg.data.given and cfg.world is None and cfg.base_dir == tmp_path


def test_overrides_parse_toml_values_and_win(tmp_path: Path) -> None:
    path = write(tmp_path, "[dpo]\nbeta = 0.1\n")
    cfg = load_config(path, ["dpo.beta=0.3", "model.base=some/model", "toy.sources=['helpful','harmless']"])
    assert (
        cfg.dpo.beta == 0.3 and cfg.model.base == "some/model" and cfg.worlds["toy"].sources == ["helpful", "harmless"]
    )
    with pytest.raises(ConfigError, match="table.key=value"):
        apply_overrides({}, ["beta=0.3"])
    with pytest.raises(ConfigError) as err:
        load_config(path, ["dpo.bta=0.3"])
    assert err.value.field == "dpo.bta"


def test_training_hash_tracks_what_changes_an_adapter() -> None:
    base = RunConfig()
    same = load_config(None, ["model.device=cpu", "data.heldout_fraction=0.3"])
    assert base.training_hash() == same.training_hash()  # device and data are hashed elsewhere
    for override in ("dpo.beta=0.2", "lora.r=4", "model.base=other", "dpo.seed=1"):
        assert load_config(None, [override]).training_hash() != base.training_hash(), override


def test_the_english_example_is_the_reproduce_setup() -> None:
    from dposhap.recipes import reproduce_recipe

    example = load_config(EXAMPLES / "english.toml").to_dict()
    recipe = load_config(None, reproduce_recipe().overrides).to_dict()
    for table in ("model", "english", "lora", "dpo"):
        assert example[table] == recipe[table], table


def test_overrides_reach_a_sub_table() -> None:
    cfg = load_config(None, ["model.base='m'", 'data.sources.vendor_b="b.jsonl"', "data.sources.vendor_a='a.jsonl'"])
    assert cfg.data.sources == {"vendor_b": "b.jsonl", "vendor_a": "a.jsonl"}
    with pytest.raises(ConfigError, match=r"\[dpo\.beta\] is not a table"):
        apply_overrides({"dpo": {"beta": 0.1}}, ["dpo.beta.x=1"])


DATA_TABLE = """[model]
base = 'm'
[data]
files = ['pairs.jsonl']
select = ['a', 'b']
source_column = 'vendor'
min_pairs = 4
heldout_fraction = 0.25
seed = 7
[data.sources]
c = ['c1.jsonl', 'c2.jsonl']
"""


def test_the_data_table_keeps_its_manifest_record_and_stays_out_of_the_training_hash(tmp_path: Path) -> None:
    # a run's manifest records cfg.to_dict() and verify rebuilds a config from it: the [data] record of an
    # existing run must read the same, key for key, whatever class holds the data settings
    cfg = load_config(write(tmp_path, DATA_TABLE))
    recorded = cfg.to_dict()["data"]
    assert list(recorded) == [
        "files",
        "sources",
        "select",
        "source_column",
        "prompt_column",
        "chosen_column",
        "rejected_column",
        "min_pairs",
        "heldout_fraction",
        "seed",
    ]
    assert recorded == {
        "files": ["pairs.jsonl"],
        "sources": {"c": ["c1.jsonl", "c2.jsonl"]},
        "select": ["a", "b"],
        "source_column": "vendor",
        "prompt_column": "prompt",
        "chosen_column": "chosen",
        "rejected_column": "rejected",
        "min_pairs": 4,
        "heldout_fraction": 0.25,
        "seed": 7,
    }
    assert config_from_dict(cfg.to_dict(), base_dir=tmp_path).to_dict() == cfg.to_dict()
    # the data are hashed per source (data_hash), never in the training hash: every [data] key may change
    plain = load_config(write(tmp_path, "[model]\nbase = 'm'\n[data]\nfiles = ['pairs.jsonl']\n"))
    assert cfg.training_hash() == plain.training_hash()
    assert config_hash(cfg.to_dict()) != config_hash(plain.to_dict())


def test_own_data_without_a_base_model_is_refused(tmp_path: Path) -> None:
    # the default base is the toy world's model: a user's data must not be trained on it unasked
    path = write(tmp_path, "[dpo]\nbeta = 0.1\n[data]\nfiles = ['pairs.jsonl']\n")
    with pytest.raises(ConfigError, match="base is not set") as err:
        load_config(path)
    assert err.value.field == "model.base" and err.value.line == 3
    assert load_config(path, ["model.base=toy"]).world is not None  # asked for: the toy world's model
    assert load_config(path, ["model.base=my-model"]).model.base == "my-model"


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("dpo.beta=abc", "dpo.beta", "expected float"),
        ("data.prompt_column=chosen", "data.prompt_column", "different columns"),
        ("data.colum=x", "data.colum", "unknown key"),
    ],
)
def test_an_override_error_names_the_override_not_a_line_of_the_file(
    tmp_path: Path, override: str, field: str, words: str
) -> None:
    path = write(tmp_path, "[model]\nbase = 'm'\n[data]\nfiles = ['pairs.jsonl']\n[dpo]\nbeta = 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert err.value.field == field and err.value.line is None
    assert str(err.value).startswith(f"--set {override} field {field!r}: ") and words in str(err.value)
    assert "<class" not in str(err.value)


def test_a_relative_model_path_is_read_from_the_config_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dposhap.errors import ModelLoadError
    from dposhap.models import resolve_model

    here = tmp_path / "here"
    (here / "model").mkdir(parents=True)
    (here / "model" / "config.json").write_text("{}")
    (tmp_path / "configs").mkdir()
    monkeypatch.chdir(here)  # a folder named like the model where the command runs: not the config's
    with pytest.raises(ModelLoadError, match="configs/model"):
        resolve_model("model/", base_dir=tmp_path / "configs")
    assert resolve_model("model/", base_dir=here).location == str((here / "model").resolve())
