import copy
import json
import logging
import pickle
from typing import Literal

import pytest

from sfumato.config import ConfigMixin, FrozenConfig, FrozenConfigError, register_to_config


class Sampler(ConfigMixin):
    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_schedule: Literal["linear", "scaled_linear"] = "linear",
        trained_betas: list[float] | None = None,
        timestep_spacing: str = "leading",
        block_sizes: tuple[int, ...] = (1, 2),
    ):
        self.seen = dict(num_train_timesteps=num_train_timesteps, timestep_spacing=timestep_spacing)


class OtherSampler(ConfigMixin):
    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, timestep_spacing: str = "linspace", order: int = 2):
        pass


def test_config_records_init_arguments_with_defaults():
    s = Sampler(beta_start=0.5)
    assert s.config["beta_start"] == 0.5
    assert s.config.num_train_timesteps == 1000
    assert s.num_train_timesteps == 1000  # diffusers-style attribute fallback
    assert set(s.config["_use_default_values"]) == {
        "num_train_timesteps",
        "beta_schedule",
        "trained_betas",
        "timestep_spacing",
        "block_sizes",
    }


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: setattr(c, "beta_start", 1.0),
        lambda c: c.__setitem__("beta_start", 1.0),
        lambda c: c.update(beta_start=1.0),
        lambda c: c.pop("beta_start"),
        lambda c: c.setdefault("x", 1),
        lambda c: c.__delitem__("beta_start"),
        lambda c: c.clear(),
    ],
)
def test_config_is_truly_frozen(mutate):
    s = Sampler()
    with pytest.raises(FrozenConfigError, match=r"from_config\(config, key=value\)"):
        mutate(s.config)
    assert s.config["beta_start"] == 0.0001


def test_nested_values_cannot_be_mutated():
    s = Sampler(block_sizes=[1, 2, 3])
    assert s.config.block_sizes == (1, 2, 3)
    with pytest.raises(AttributeError):
        s.config.block_sizes.append(4)


def test_copy_and_pickle_keep_the_config():
    config = Sampler(beta_start=0.25).config
    assert copy.deepcopy(config) == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert isinstance(pickle.loads(pickle.dumps(config)), FrozenConfig)


def test_save_config_writes_diffusers_keys(tmp_path):
    path = Sampler(beta_start=0.5).save_config(tmp_path)
    text = path.read_text()
    assert path.name == "scheduler_config.json" and text.endswith("}\n")
    data = json.loads(text)
    assert data["_class_name"] == "Sampler"
    assert "_diffusers_version" in data and "_sfumato_version" in data
    assert "_use_default_values" not in data
    assert list(data) == sorted(data)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["block_sizes"] == [1, 2]


def test_round_trip_through_file(tmp_path):
    s = Sampler(beta_start=0.5, trained_betas=[0.1, 0.2], timestep_spacing="trailing")
    s.save_config(tmp_path)
    loaded = Sampler.from_config(Sampler.load_config(tmp_path))
    for key in ("beta_start", "trained_betas", "timestep_spacing", "num_train_timesteps", "block_sizes"):
        assert loaded.config[key] == s.config[key]


def test_unknown_keys_are_kept_ignored_and_logged_once(tmp_path, caplog):
    config = {**Sampler().config, "from_the_future": 3, "_class_name": "Sampler"}
    with caplog.at_level(logging.DEBUG, logger="sfumato.config"):
        first = Sampler.from_config(config)
        Sampler.from_config(config)
    notes = [r for r in caplog.records if "from_the_future" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG
    assert first.config["from_the_future"] == 3
    first.save_config(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["from_the_future"] == 3


def test_wrong_type_names_the_key():
    with pytest.raises(TypeError, match="'num_train_timesteps' must be int; got '1000'"):
        Sampler.from_config({"num_train_timesteps": "1000"})
    with pytest.raises(TypeError, match="'trained_betas'"):
        Sampler(trained_betas=["a"])
    with pytest.raises(TypeError, match="'num_train_timesteps'"):
        Sampler(num_train_timesteps=True)


def test_value_outside_literal_lists_valid_values():
    with pytest.raises(
        ValueError, match="'beta_schedule' must be one of 'linear', 'scaled_linear'; got 'cosine'"
    ):
        Sampler(beta_schedule="cosine")


def test_from_config_overrides_and_unused_kwargs():
    s, unused = Sampler.from_config(Sampler().config, return_unused_kwargs=True, beta_start=0.3, nope=1)
    assert s.config.beta_start == 0.3
    assert unused == {"nope": 1}


def test_from_config_refuses_a_path(tmp_path):
    with pytest.raises(TypeError, match="from_pretrained"):
        Sampler.from_config(str(tmp_path))


def test_defaults_of_the_source_do_not_leak_into_another_class():
    # Like EulerDiscreteScheduler.from_config(pndm.config): keys PNDM left at its defaults take Euler's.
    other = OtherSampler.from_config(Sampler().config)
    assert other.config.timestep_spacing == "linspace"
    explicit = OtherSampler.from_config(
        Sampler(timestep_spacing="trailing", beta_schedule="scaled_linear").config
    )
    assert explicit.config.timestep_spacing == "trailing"
    # keys only the source set are kept, so the file round-trips; its defaults are dropped
    assert explicit.config.beta_schedule == "scaled_linear"
    assert "beta_start" not in explicit.config


def test_super_init_does_not_overwrite_the_subclass_config():
    class Child(Sampler):
        @register_to_config
        def __init__(self, extra: int = 7, num_train_timesteps: int = 10):
            super().__init__(num_train_timesteps=num_train_timesteps, timestep_spacing="trailing")

    c = Child(extra=8)
    assert dict(c.config) == {
        "extra": 8,
        "num_train_timesteps": 10,
        "_use_default_values": ("num_train_timesteps",),
    }
    assert c.seen["timestep_spacing"] == "trailing"


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        Sampler.load_config(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid JSON config"):
        Sampler.load_config(tmp_path)


@pytest.mark.parity
def test_same_semantics_as_diffusers_configs(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.configuration_utils import register_to_config as d_register

    class DSampler(diffusers.ConfigMixin):
        config_name = "scheduler_config.json"

        @d_register
        def __init__(
            self,
            num_train_timesteps: int = 1000,
            beta_start: float = 0.0001,
            beta_schedule: str = "linear",
            trained_betas=None,
            timestep_spacing: str = "leading",
            block_sizes=(1, 2),
        ):
            pass

    class DOther(diffusers.ConfigMixin):
        config_name = "scheduler_config.json"

        @d_register
        def __init__(
            self, num_train_timesteps: int = 1000, timestep_spacing: str = "linspace", order: int = 2
        ):
            pass

    # a file written by diffusers loads here, and the other way round, with the same values
    DSampler(beta_start=0.5, timestep_spacing="trailing").save_config(tmp_path / "d")
    ours = Sampler.from_config(Sampler.load_config(tmp_path / "d"))
    Sampler(beta_start=0.5, timestep_spacing="trailing").save_config(tmp_path / "s")
    theirs = DSampler.from_config(DSampler.load_config(tmp_path / "s"))
    for key in ("num_train_timesteps", "beta_start", "beta_schedule", "trained_betas", "timestep_spacing"):
        assert ours.config[key] == theirs.config[key]
    # cross-class defaults behave the same
    for source_ours, source_theirs in [
        (Sampler(), DSampler()),
        (Sampler(timestep_spacing="trailing"), DSampler(timestep_spacing="trailing")),
    ]:
        a = OtherSampler.from_config(source_ours.config)
        b = DOther.from_config(source_theirs.config)
        assert a.config.timestep_spacing == b.config.timestep_spacing
        assert a.config.order == b.config.order


def test_loaded_writer_version_is_kept_but_saving_writes_ours(tmp_path):
    loaded = Sampler.from_config(
        {**Sampler().config, "_diffusers_version": "0.6.0", "_class_name": "Sampler"}
    )
    assert loaded.config["_diffusers_version"] == "0.6.0"
    loaded.save_config(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["_diffusers_version"] != "0.6.0"
