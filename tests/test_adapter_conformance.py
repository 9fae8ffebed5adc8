"""One conformance suite run over every registered method (scikit-learn's check_estimator idea)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tests.plugin_stages  # noqa: F401  (tiny-shared: a method with a shared component)
from bench import registry
from bench.adapter import CAPABILITIES, NotFittedError, NotGenerativeError

METHODS = registry.methods().names()
FAST = {"steps": 6, "batch_size": 8, "log_every": 3}


_TRAINED_COMPONENTS: dict[str, object] = {}


def _components(cls, params, data, seed):
    """The declared components of ``cls``, trained as the runner would (their tiny preset, FAST), once each."""
    out = {}
    for name, spec in cls.components.items():
        if not spec.needed(params):
            continue
        ccls = registry.methods().load(spec.method)
        cparams = {**ccls.presets[spec.preset_for("tiny")], **_fast(ccls), **spec.params_for(params)}
        cseed = 0 if spec.share == "dataset" else seed
        key = json.dumps([spec.method, cparams, cseed, type(data).__name__], sort_keys=True, default=str)
        if key not in _TRAINED_COMPONENTS:  # the runner trains a component once for all its dependants too
            _TRAINED_COMPONENTS[key] = _fit(spec.method, data, seed=cseed, **cparams)
        out[name] = _TRAINED_COMPONENTS[key]
    return out


def _fast(cls) -> dict:
    """The short-run settings a method has (the contract requires none of these names)."""
    return {k: v for k, v in FAST.items() if k in cls.defaults}


def _fit(name, data, seed=0, **over):
    cls = registry.methods().load(name)
    adapter = cls.from_preset("tiny", **{**_fast(cls), **over})
    if not cls.components:
        return adapter.fit(data, seed=seed)
    components = _components(cls, adapter.get_params(), data, seed)
    adapter.fit(data, seed=seed, components=components)
    adapter.conformance_components_ = components
    return adapter


class _FittedOnDemand(dict):
    """method name -> its fitted tiny model, trained the first time a test asks (``-k pca`` trains only pca)."""

    def __missing__(self, name):
        from tests.conftest import TinyBars

        self[name] = _fit(name, TinyBars())
        return self[name]


@pytest.fixture(scope="module")
def fitted():
    return _FittedOnDemand()


def test_registry_has_the_autoencoder_family():
    assert {"ae", "vae", "beta-vae", "infovae"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_declares_known_capabilities_and_presets(name):
    cls = registry.methods().load(name)
    assert set(cls.capabilities) <= CAPABILITIES
    assert {"tiny", "paper"} <= set(cls.presets)
    for preset in cls.presets.values():
        cls.check_params(preset)  # every preset is valid


@pytest.mark.parametrize("name", METHODS)
def test_constructor_only_stores_params(name):
    """Whatever hyperparameters a method declares: they are stored, misspellings get a suggestion,
    wrong types a clear error."""
    cls = registry.methods().load(name)
    numbers = [k for k, v in cls.defaults.items() if type(v) in (int, float) and not isinstance(v, bool)]
    if not numbers:
        pytest.skip(f"{name} declares no numeric hyperparameter")
    key = numbers[0]
    value = cls.defaults[key] + 1
    adapter = cls(**{key: value})
    assert adapter.get_params()[key] == value
    assert set(adapter.get_params()) == set(cls.defaults)
    with pytest.raises(ValueError, match=f"did you mean '{key}'"):
        cls(**{key + "x": value})
    with pytest.raises(TypeError, match=f"'{key}' must be"):
        cls(**{key: "many"})


@pytest.mark.parametrize("name", METHODS)
def test_encode_before_fit_raises_clear_error(name, tiny_data):
    adapter = registry.methods().load(name).from_preset("tiny")
    with pytest.raises(NotFittedError, match="not fitted"):
        adapter.encode(tiny_data.images([0, 1]))
    if "sample" in adapter.capabilities:
        with pytest.raises(NotFittedError):
            adapter.sample(2)


@pytest.mark.parametrize("name", METHODS)
def test_shapes_and_ranges(name, fitted, tiny_data):
    adapter = fitted[name]
    x = tiny_data.images(np.arange(5))
    codes = adapter.encode(x)
    assert codes.shape == (5, adapter.code_dim) and codes.dtype == np.float32
    if "sample" in adapter.capabilities:
        samples = adapter.sample(3, seed=1)
        assert samples.shape == (3, *tiny_data.image_shape)
        assert samples.min() >= 0.0 and samples.max() <= 1.0
    else:  # a representation-only method says so, naming itself
        with pytest.raises(NotGenerativeError, match=f"{type(adapter).__name__} cannot generate images"):
            adapter.sample(3, seed=1)
    if "reconstruct" in adapter.capabilities:
        assert adapter.reconstruct(x).shape == x.shape
    if "decode" in adapter.capabilities:
        assert adapter.decode(codes).shape == x.shape
    if "stochastic_encode" in adapter.capabilities:
        a = adapter.encode(x, stochastic=True, seed=3)
        b = adapter.encode(x, stochastic=True, seed=3)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, codes)
        mean, logvar = adapter.encode_posterior(x)  # the posterior UDR's KL filter reads
        assert mean.shape == logvar.shape == codes.shape and np.isfinite(logvar).all()
        np.testing.assert_allclose(mean, codes, rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(TypeError):
            adapter.encode(x, stochastic=True)


@pytest.mark.parametrize("name", METHODS)
def test_wrong_image_shape_is_rejected(name, fitted):
    with pytest.raises(ValueError, match="expected images of shape"):
        fitted[name].encode(np.zeros((2, 1, 8, 8), np.float32))


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_results_on_cpu(name, fitted, tiny_data):
    again = _fit(name, tiny_data, seed=0)
    x = tiny_data.images(np.arange(6))
    np.testing.assert_array_equal(again.encode(x), fitted[name].encode(x))
    if "sample" in again.capabilities:
        np.testing.assert_array_equal(again.sample(4, seed=2), fitted[name].sample(4, seed=2))
    # (a deterministic method may give every seed the same model: the contract does not forbid it)


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, fitted, tiny_data, tmp_path):
    adapter = fitted[name]
    path = tmp_path / "model.pt"
    adapter.save(path)
    loaded = type(adapter).load(path, components=getattr(adapter, "conformance_components_", None))
    x = tiny_data.images(np.arange(6))
    np.testing.assert_array_equal(loaded.encode(x), adapter.encode(x))
    if "sample" in adapter.capabilities:
        np.testing.assert_array_equal(loaded.sample(3, seed=5), adapter.sample(3, seed=5))
    assert loaded.get_params() == adapter.get_params()


def test_load_rejects_a_checkpoint_of_another_method(fitted, tmp_path):
    path = tmp_path / "ae.pt"
    fitted["ae"].save(path)
    with pytest.raises(ValueError, match="expected 'methods.vae:VAE'"):
        registry.methods().load("vae").load(path)


def test_nan_loss_raises_diverged_error(tiny_data):
    from bench.adapter import DivergedError

    with pytest.raises(DivergedError, match="lower the learning rate"):
        _fit("vae", tiny_data, lr=1e12, steps=30, log_every=10)
