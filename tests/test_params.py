"""params.yaml: types, ranges, enumerations, cross-checks, overrides and the CLI's errors."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, run_cli
from semidisent.config import apply_overrides, load_params, params_from_dict, parse_override
from semidisent.config.schema import SECTIONS, Params
from semidisent.errors import ParamsError


def test_project_params_yaml_is_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Every section and every key of the schema is spelled out in params.yaml (single source).
    assert set(raw) == set(SECTIONS)
    for name, section in params.to_dict().items():
        assert set(raw[name]) == set(section), name
    assert params.train.replacement_rate == 0.5


def test_defaults_validate_without_a_file():
    assert params_from_dict({}) == Params()


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("train.replacement_rate=1.5", "train.replacement_rate = 1.5", "[0, 1]"),
        ("train.replacement_rate=-0.1", "train.replacement_rate = -0.1", "[0, 1]"),
        ("train.beta=0", "train.beta = 0", "> 0"),
        ("train.beta=-2", "train.beta = -2", "> 0"),
        ("train.beta=abc", "train.beta = 'abc'", "a number"),
        ("train.steps=1.5", "train.steps = 1.5", "an integer"),
        ("train.steps=true", "train.steps = True", "an integer"),
        ("train.supervised_loss=hinge", "train.supervised_loss = 'hinge'", "xent, l2, cov, embed"),
        ("data.dataset=imagenet", "data.dataset = 'imagenet'", "dsprites"),
        ("data.dataset=shapes3d", "data.path = None", "path of the shapes3d files"),
        ("supervision.n_labels=737281", "supervision.n_labels = 737281", "at most the 737280"),
        ("supervision.n_labels=0", "supervision.n_labels = 0", "> 0"),
        ("supervision.label_fraction=1.5", "supervision.label_fraction = 1.5", "(0, 1]"),
        ("supervision.validation_fraction=1", "supervision.validation_fraction = 1.0", "[0, 1)"),
        ("supervision.labeller=oracle", "supervision.labeller = 'oracle'", "perfect, binned"),
        (
            "supervision.observed_factors=[shape,color]",
            "supervision.observed_factors",
            "factor names of dsprites",
        ),
        ("supervision.label_fraction=0.01", "supervision.n_labels = 1000", "exactly one of"),
        ("model.num_latent=3", "model.num_latent = 3", "at least the 5 factors"),
        ("eval.metrics=[mig,foo]", "eval.metrics", "metric names among"),
        ("search.space.bogus={low: 1, high: 2}", "search.space.bogus", "a key of train"),
        ("train.gamma_schedule=ramp", "train.gamma_threshold = 0", "> 0 with gamma_schedule"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, key, allowed):
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", [override])
    assert key in str(e.value)
    assert allowed in str(e.value)


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(
        ParamsError, match=r"unknown parameter train\.bta \(did you mean train\.beta\?\)"
    ):
        load_params(None, ["train.bta=3"])
    with pytest.raises(ParamsError, match=r"unknown parameter trian\.beta"):
        load_params(None, ["trian.beta=3"])
    with pytest.raises(ParamsError, match="unknown section 'extra'"):
        params_from_dict({"extra": {}})


def test_overrides_use_dvc_dotted_form_and_yaml_values():
    assert parse_override("train.beta=8") == (["train", "beta"], 8)
    assert parse_override("eval.metrics=[mig, dci]") == (["eval", "metrics"], ["mig", "dci"])
    raw = apply_overrides({"train": {"beta": 1.0}}, ["train.beta=8", "search.space.beta.high=4"])
    assert raw["train"]["beta"] == 8
    assert raw["search"]["space"]["beta"]["high"] == 4
    p = load_params(
        ROOT / "params.yaml",
        ["train.beta=8", "supervision.label_fraction=0.001", "supervision.n_labels=null"],
    )
    assert p.train.beta == 8.0 and isinstance(p.train.beta, float)
    assert p.n_labels_for(737280) == 737
    for bad in ("train.beta", "=3", "train..beta=1"):
        with pytest.raises(ParamsError, match="invalid override"):
            parse_override(bad)


def test_yaml_1_1_exponent_strings_are_numbers():
    # PyYAML reads 1e-4 (no dot) as a string; a learning rate written that way must still work.
    assert load_params(None, ["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="mapping of sections"):
        load_params(bad)


def test_digest_is_stable_and_section_scoped():
    a = load_params(None, ["train.beta=2"])
    b = load_params(None, ["train.beta=3"])
    assert a.digest("data", "supervision") == b.digest("data", "supervision")
    assert a.digest("train") != b.digest("train")
    assert a.digest() == load_params(None, ["train.beta=2"]).digest()


def test_cli_prints_one_clear_error_and_exits_2(tmp_path):
    proc = run_cli(
        "prepare",
        "--params",
        str(ROOT / "params.yaml"),
        "-S",
        "train.replacement_rate=1.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 2
    assert (
        "invalid parameter train.replacement_rate = 1.5: expected a number in [0, 1]" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_yaml_on_off_words_mean_the_choices_they_name():
    """PyYAML reads off / on as booleans: `-S train.amp=off` and `fast: on` in a file still
    select the choices "off" / "on"; a boolean where no such word is a choice is refused."""
    params = load_params(None, ["train.amp=off", "train.fast=on"])
    assert (params.train.amp, params.train.fast) == ("off", "on")
    assert params_from_dict(yaml.safe_load("train: {fast: off, amp: off}")).train.fast == "off"
    with pytest.raises(ParamsError, match=r"train\.supervised_loss = True"):
        load_params(None, ["train.supervised_loss=on"])
