"""Search-space files: the Optuna distributions they mean, and one clear line for each bad file."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from mmtune.errors import MMTuneError
from mmtune.search.spaces import Suggest, load_space, parse_space

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))

GOOD = {
    "model": {"choices": ["simple_lstm", "conv_tau"]},
    "shared": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [8, 16]},
        "epochs": 3,
    },
    "models": {
        "simple_lstm": {"preset": "small", "hidden": {"type": "int", "low": 32, "high": 128, "step": 32}},
        "conv_tau": {
            "preset": "small",
            "N_T": {"type": "int", "low": 1, "high": 4},
            "enc_kernel": {"type": "categorical", "choices": [3, 5, 7]},
            "kl_weight": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05},
            "flow": {"type": "categorical", "choices": ["none", "oracle"]},
        },
    },
    "data": {"train_size": 32, "val_size": 16, "test_size": 8},
}


def _write(tmp_path: Path, obj: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return path


def test_distributions(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, GOOD))
    d = space.distributions("conv_tau")
    assert d["model"] == optuna.distributions.CategoricalDistribution(["simple_lstm", "conv_tau"])
    assert d["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["batch_size"] == optuna.distributions.CategoricalDistribution([8, 16])
    assert d["conv_tau.N_T"] == optuna.distributions.IntDistribution(1, 4)
    assert d["conv_tau.kl_weight"] == optuna.distributions.FloatDistribution(0.0, 0.2, step=0.05)
    assert "epochs" not in d and "simple_lstm.hidden" not in d  # fixed, and the other model's
    assert space.distributions("simple_lstm")["simple_lstm.hidden"] == optuna.distributions.IntDistribution(
        32, 128, step=32)
    assert space.max_epochs == 3


def test_model_weights_plan_the_families_in_proportion_interleaved(tmp_path: Path) -> None:
    assert load_space(_write(tmp_path, GOOD)).model_plan(6) == []  # no weights: Optuna samples the model
    weighted = {**GOOD, "model": {"choices": ["simple_lstm", "conv_tau"], "weights": [1, 2]}}
    space = load_space(_write(tmp_path, weighted))
    assert space.model_weights == (1.0, 2.0)
    plan = space.model_plan(9)
    assert plan.count("conv_tau") == 6 and plan.count("simple_lstm") == 3
    assert "simple_lstm" in plan[:3] and "conv_tau" in plan[:3]  # both start early, not in blocks
    assert space.model_plan(2) == ["conv_tau", "simple_lstm"]


def test_define_by_run_is_conditional_and_builds_configs(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, GOOD))
    suggest = pickle.loads(pickle.dumps(Suggest(space)))  # OptunaSearch pickles it with the searcher
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = suggest(trial)
        model = params["model"]
        seen.add(model)
        other = "conv_tau" if model == "simple_lstm" else "simple_lstm"
        assert not any(k.startswith(other + ".") for k in params)
        assert params["optuna_trial"] == trial.number
        assert set(trial.distributions) == set(space.distributions(model))
        cfg = space.trial_config(params, {"seed": 3, "device": "cpu"})
        assert cfg.model == model and cfg.train.epochs == 3 and cfg.train.seed == 3
        assert cfg.data.train_size == 32
        if model == "conv_tau":
            assert cfg.model_cfg.N_T == params["conv_tau.N_T"]
            assert cfg.model_cfg.hid_S == 16  # the small preset
            assert cfg.train.flow == params["conv_tau.flow"]
            assert cfg.model_cfg.in_channels == (1 if cfg.train.flow == "none" else 3)
        else:
            assert cfg.model_cfg.hidden == params["simple_lstm.hidden"]
        study.tell(trial, 1.0)
    assert seen == {"simple_lstm", "conv_tau"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spaces_parse(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(path.read_text()).get("data") or {}
    if "path" in data:  # a space over your own array (own_data.yaml): its example file, where the sweep runs
        monkeypatch.chdir(tmp_path)
        np.save(data["path"], np.zeros((10, 24, 2, 32, 48), np.uint8))
    space = load_space(path)
    assert space.models
    for model in space.models:
        assert space.distributions(model)


def _bad(**changes: object) -> dict:
    import copy

    space = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        node = space
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return space


_DELETE = object()
BAD = [
    ("malformed yaml", "model: [simple_lstm\nshared: {", "not valid YAML"),
    ("not a mapping", "- a\n- b\n", "a search space is a mapping"),
    ("a top-level list of 10,001 items", "[" + "1, " * 10_000 + "1]",
     "the top-level list must hold at most 10,000 items (for a categorical of more, use an int or float range "
     "instead), got 10,001"),
    ("a list of 10,001 items in a list", {"model": "simple_lstm", "data": {"x": [[1], list(range(10_001))]}},
     "data.x.1 must hold at most 10,000 items"),
    ("unknown top-level key", _bad(sweeep={"samples": 2}), "unknown top-level key 'sweeep'"),
    ("unknown model in choices", _bad(model={"choices": ["simple_lstm", "conv_tau", "convlstm"]}),
     "unknown model 'convlstm'"),
    ("unknown model section", _bad(models__tau={"N_T": 2}), "models.tau: unknown model"),
    ("section not among choices", _bad(model="simple_lstm"), "models.conv_tau: not among the model choices"),
    ("unknown model parameter", _bad(models__conv_tau__N_X=2), "models.conv_tau.N_X: unknown parameter"),
    ("unknown shared parameter", _bad(shared__learning_rate=0.1), "shared.learning_rate: unknown training"),
    ("reserved seed", _bad(shared__seed=1), "seed is set by the sweep"),
    ("unknown spec key", _bad(shared__lr={"type": "float", "low": 1e-4, "high": 1e-2, "logg": True}),
     "unknown float spec key 'logg'"),
    ("unknown type", _bad(shared__lr={"type": "loguniform", "low": 1e-4, "high": 1e-2}), "type must be one of"),
    ("a list as type", _bad(shared__lr={"type": ["float"], "low": 1e-4, "high": 1e-2}), "type must be one of"),
    ("missing high", _bad(shared__lr={"type": "float", "low": 1e-4}), "needs `high`"),
    ("inverted range", _bad(shared__lr={"type": "float", "low": 1e-2, "high": 1e-4}), "inverted range"),
    ("log with low 0", _bad(shared__lr={"type": "float", "low": 0.0, "high": 1e-2, "log": True}),
     "log scale needs low > 0"),
    ("empty choices", _bad(shared__batch_size={"type": "categorical", "choices": []}),
     "choices must be a non-empty list"),
    ("empty int range by step", _bad(models__conv_tau__N_T={"type": "int", "low": 1, "high": 2, "step": 5}),
     "empty range"),
    ("float bounds for int", _bad(models__conv_tau__N_T={"type": "int", "low": 1.5, "high": 4}),
     "must be an integer"),
    ("bare list", _bad(shared__batch_size=[8, 16]), "a list is ambiguous"),
    ("even kernel in choices", _bad(models__conv_tau__enc_kernel={"type": "categorical", "choices": [3, 4]}),
     "enc_kernel = 4"),
    ("even kernel in an int range", _bad(models__conv_tau__enc_kernel={"type": "int", "low": 3, "high": 5}),
     "enc_kernel = 4"),
    ("odd N_S", _bad(models__conv_tau__N_S={"type": "categorical", "choices": [2, 3]}), "N_S = 3"),
    ("N_S too deep for the frame", _bad(models__conv_tau__N_S={"type": "int", "low": 2, "high": 14, "step": 2}),
     "models.conv_tau.N_S = 14: N_S must be at most 12 for 64x64 frames"),
    ("unknown flow estimator", _bad(models__conv_tau__flow={"type": "categorical", "choices": ["none", "lk"]}),
     "unknown flow estimator 'lk'"),
    ("flow for a model without flow", _bad(models__simple_lstm__flow="oracle"), "flow is an option of conv_tau;"),
    ("unknown preset", _bad(models__conv_tau__preset="tiny"), "unknown preset 'tiny'"),
    ("unknown data key", _bad(data__train_sz=8), "data: unknown key 'train_sz'"),
    ("bad data value", _bad(data__train_size=0), "train_size must be a positive integer"),
    ("bad training value", _bad(shared__optimizer="adamax"), "optimizer must be one of"),
    ("bad sweep value", _bad(sweep={"samples": "many"}), "sweep.samples must be an integer"),
    ("bad sweep time budget", _bad(sweep={"time_budget": "10 minutes"}), "sweep.time_budget: must be a duration"),
    ("sweep final share of 1", _bad(sweep={"final_share": 1.0}), "sweep.final_share must be at least 0 and below 1"),
    ("sweep final share as text", _bad(sweep={"final_share": "most"}), "sweep.final_share must be a number"),
    ("no model at all", {"shared": {"lr": 0.001}}, "no model"),
    ("weights of the wrong length", _bad(model={"choices": ["simple_lstm", "conv_tau"], "weights": [1]}),
     "model.weights must be a list of 2 numbers > 0"),
    ("a zero weight", _bad(model={"choices": ["simple_lstm", "conv_tau"], "weights": [1, 0]}),
     "model.weights must be a list of 2 numbers > 0"),
]


@pytest.mark.parametrize("what,content,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_spaces_give_one_clear_line(tmp_path: Path, what: str, content: object, expected: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(MMTuneError) as err:
        load_space(path)
    msg = str(err.value)
    assert expected in msg, msg
    assert "\n" not in msg
    assert str(path) in msg


def test_a_plugin_model_is_searchable_from_yaml(tmp_path: Path) -> None:
    """The `toy` model of tests/plugins/mmtune_toy_plugin: its config fields are the space's knobs."""
    text = """
    model: {choices: [toy, simple_lstm]}
    shared: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, epochs: 1}
    models:
      toy:
        preset: small
        hidden: {type: int, low: 4, high: 16, step: 4}
        kernel_size: {type: categorical, choices: [3, 5]}
      simple_lstm: {preset: small}
    data: {train_size: 32, val_size: 8, test_size: 8}
    """
    space = load_space(_write(tmp_path, textwrap.dedent(text)))
    d = space.distributions("toy")
    assert d["toy.hidden"] == optuna.distributions.IntDistribution(4, 16, step=4)
    assert d["toy.kernel_size"] == optuna.distributions.CategoricalDistribution([3, 5])
    trial = space.trial_config({"model": "toy", "lr": 1e-3, "toy.hidden": 12, "toy.kernel_size": 5})
    assert trial.model == "toy" and (trial.model_cfg.hidden, trial.model_cfg.kernel_size) == (12, 5)
    bad = textwrap.dedent(text).replace("choices: [3, 5]", "choices: [3, 4]")
    with pytest.raises(MMTuneError, match=r"models.toy.kernel_size = 4: kernel_size must be one of"):
        load_space(_write(tmp_path, bad, "bad.yaml"))


def test_missing_file() -> None:
    with pytest.raises(MMTuneError, match="does not exist"):
        load_space("/nonexistent/space.yaml")


def test_parse_space_names_the_source() -> None:
    with pytest.raises(MMTuneError, match=r"^here: "):
        parse_space({"model": "nope"}, "here")


@pytest.mark.parametrize("spec,middle", [
    ({"type": "int", "low": 2, "high": 4}, 3), ({"type": "int", "low": 1, "high": 4}, 3),  # 1 + round(1.5)
    ({"type": "int", "low": 16, "high": 256, "log": True}, 64), ({"type": "int", "low": 2, "high": 10, "step": 4}, 6),
    ({"type": "float", "low": 0.0, "high": 0.2}, 0.1), ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, 1e-3),
    ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}, 0.5),
    ({"type": "categorical", "choices": ["none", "oracle"]}, "none"), (7, 7),
])
def test_the_middle_of_a_parameter_is_what_a_run_without_search_takes(spec: object, middle: object) -> None:
    from mmtune.search.spaces import parse_param

    assert parse_param(spec, "x").middle() == pytest.approx(middle) if not isinstance(middle, str) \
        else parse_param(spec, "x").middle() == middle


def test_default_params_are_the_first_model_and_the_middle_of_its_ranges(tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "model": {"choices": ["conv_tau", "simple_lstm"]},
        "shared": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "epochs": 2},
        "models": {"conv_tau": {"preset": "small", "N_T": {"type": "int", "low": 1, "high": 3}},
                   "simple_lstm": {"preset": "small", "hidden": {"type": "categorical", "choices": [32, 64]}}}})
    params = load_space(path).default_params()
    assert params == {"model": "conv_tau", "lr": pytest.approx(1e-3), "conv_tau.N_T": 2}


# -- validation time does not grow with the space -------------------------------------------------

HIDDEN_SPACE = {"model": "simple_lstm", "models": {"simple_lstm": {"preset": "small"}}}


def _with_hidden(spec: object) -> dict:
    return {**HIDDEN_SPACE, "models": {"simple_lstm": {"preset": "small", "hidden": spec}}}


@pytest.fixture
def config_builds(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The model configs validation builds (every build goes through spaces.build_trial)."""
    import mmtune.search.spaces as spaces

    built: list[dict] = []
    real = spaces.build_trial

    def counting(model, preset=None, model_overrides=None, *args, **kwargs):
        built.append(dict(model_overrides or {}))
        return real(model, preset, model_overrides, *args, **kwargs)

    monkeypatch.setattr(spaces, "build_trial", counting)
    return built


@pytest.mark.parametrize("spec, first, last", [
    ({"type": "categorical", "choices": list(range(1, 10_001))}, 1, 10_000),  # the most choices allowed
    ({"type": "int", "low": 1, "high": 1_000_000}, 1, 1_000_000),
    ({"type": "int", "low": 8, "high": 1_000_000, "log": True}, 8, 1_000_000),
    ({"type": "int", "low": 4, "high": 4_000_003, "step": 4}, 4, 4_000_000),  # Optuna samples on the step's grid
])
def test_a_large_parameter_is_validated_with_a_bounded_number_of_configs(
        spec: dict, first: int, last: int, config_builds: list[dict]) -> None:
    parse_space(_with_hidden(spec), "big")
    hidden = [b["hidden"] for b in config_builds]
    assert len(hidden) == 65  # the base config, then 64 values:
    assert hidden[1] == first and hidden[-1] == last  # both ends ...
    gaps = [b - a for a, b in zip(hidden[1:], hidden[2:], strict=False)]
    assert min(gaps) > 0 and max(gaps) <= 2 * min(gaps)  # ... and 62 evenly spread between


def test_every_value_of_a_small_parameter_is_checked(config_builds: list[dict]) -> None:
    parse_space(_with_hidden({"type": "categorical", "choices": list(range(1, 65))}), "small")
    assert [b["hidden"] for b in config_builds[1:]] == list(range(1, 65))
    config_builds.clear()
    parse_space(_with_hidden({"type": "int", "low": 10, "high": 640, "step": 10}), "small")
    assert [b["hidden"] for b in config_builds[1:]] == list(range(10, 641, 10))


def test_a_bad_last_choice_of_a_large_categorical_is_found() -> None:
    choices = [*range(1, 5_000), 0]
    with pytest.raises(MMTuneError, match=r"^big: models.simple_lstm.hidden = 0: hidden must be an integer ≥ 1"):
        parse_space(_with_hidden({"type": "categorical", "choices": choices}), "big")


def test_a_million_choices_are_refused_before_any_config_is_built(config_builds: list[dict]) -> None:
    with pytest.raises(MMTuneError) as err:
        parse_space(_with_hidden({"type": "categorical", "choices": list(range(1, 1_000_001))}), "big")
    assert str(err.value) == ("big: models.simple_lstm.hidden.choices must hold at most 10,000 choices (for more, "
                              "use an int or float range instead), got 1,000,000")
    assert config_builds == []


def test_a_million_choices_in_yaml_are_refused_before_yaml_builds_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_builds: list[dict]) -> None:
    """The issue's file: its 10^6 choices are counted from the parser's events, never built as objects."""
    choices = ", ".join(map(str, range(1, 1_000_001)))
    path = _write(tmp_path, "model: simple_lstm\nmodels:\n  simple_lstm:\n    preset: small\n"
                            f"    hidden: {{type: categorical, choices: [{choices}]}}\n")

    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("PyYAML built the objects of the space")

    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_document", no_building)
    with pytest.raises(MMTuneError) as err:
        load_space(path)
    assert str(err.value) == (f"{path}: models.simple_lstm.hidden.choices must hold at most 10,000 items (for a "
                              f"categorical of more, use an int or float range instead), got 1,000,000")
    assert config_builds == []


def test_a_data_section_naming_an_array_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data: {path, t_in, t_out}: the path is made absolute (Ray trials run elsewhere) and the models follow
    the file's clip spec; a bad file, an unknown key or flow on it is one line naming the space."""
    monkeypatch.chdir(tmp_path)
    np.save("clips.npy", np.zeros((10, 16, 2, 16, 24), np.uint8))
    no_flow = {**GOOD, "models": {"simple_lstm": GOOD["models"]["simple_lstm"]}}
    space = load_space(_write(tmp_path, {**no_flow, "data": {"path": "clips.npy", "t_in": 8, "t_out": 8}}))
    assert space.data["path"] == str(tmp_path / "clips.npy")
    cfg = space.trial_config({"model": "simple_lstm", "lr": 1e-3, "batch_size": 8, "simple_lstm.hidden": 32})
    assert (cfg.model_cfg.out_channels, cfg.model_cfg.height, cfg.model_cfg.t_in) == (2, 16, 8)
    np.save("short.npy", np.zeros((10, 12, 2, 16, 24), np.uint8))
    for data, message in [
        ({"path": "short.npy", "layout": "NTCHW", "t_in": 8, "t_out": 8},
         "data: data file " + str(tmp_path / "short.npy") + ": clips of 12 frames are fewer than t_in + t_out = 16"),
        ({"path": "clips.npy", "train_size": 8}, "data: unknown key 'train_size'"),
    ]:
        with pytest.raises(MMTuneError) as info:
            load_space(_write(tmp_path, {**no_flow, "data": data}))
        assert message in str(info.value) and str(info.value).startswith(str(tmp_path / "space.yaml"))
    with pytest.raises(MMTuneError, match="flow 'oracle' is offered for generated Moving MNIST only"):
        load_space(_write(tmp_path, {**GOOD, "data": {"path": "clips.npy", "t_in": 8, "t_out": 8}}))


def test_space_params_reads_what_the_parser_samples_without_torch() -> None:
    """The report's reading of a space.yaml (search.params.space_params, no model registry and no
    torch) gives each model the distributions the full parser's SearchSpace samples from."""
    import subprocess
    import sys

    from mmtune.search.params import space_params

    raw = yaml.safe_load((REPO / "search_spaces" / "default.yaml").read_text())
    space = parse_space(raw, "default.yaml")
    for model in space.models:
        assert {n: p.distribution() for n, p in space_params(raw, model).items()} == space.distributions(model)
    code = "import sys, mmtune.search.params; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
