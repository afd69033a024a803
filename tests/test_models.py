"""Model architecture: parameter shapes and counts by formula, pre-training, the registry."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax.models import GMF, MLP, MODELS, NeuMF, create_model, layers, load_pretrained
from ncf_jax.tasks.ncf import NCFModelConfig as ModelConfig

NU, NI = 7, 11
IDS = jnp.array([0, 3, 6]), jnp.array([1, 5, 10])


def _init(model, seed=0):
    return model.init(jax.random.key(seed), *IDS)


def _count(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def _shapes(params) -> dict:
    return {k: {n: v.shape for n, v in d.items()} for k, d in params["params"].items()}


def test_gmf_shapes_and_count():
    params = _init(GMF(NU, NI, num_factors=4))
    assert _shapes(params) == {
        "mf_user": {"embedding": (NU, 4)},
        "mf_item": {"embedding": (NI, 4)},
        "out": {"kernel": (4, 1), "bias": (1,)},
    }
    assert _count(params) == (NU + NI) * 4 + 4 + 1


def test_mlp_shapes_and_count():
    layers = (16, 8, 4)
    params = _init(MLP(NU, NI, layers=layers))
    shapes = _shapes(params)
    assert shapes["mlp_user"]["embedding"] == (NU, 8) and shapes["mlp_item"]["embedding"] == (NI, 8)
    assert shapes["mlp_dense_0"]["kernel"] == (16, 8) and shapes["mlp_dense_1"]["kernel"] == (8, 4)
    assert shapes["out"]["kernel"] == (4, 1)
    dense = sum(a * b + b for a, b in zip(layers[:-1], layers[1:], strict=True))
    assert _count(params) == (NU + NI) * 8 + dense + 4 + 1


def test_neumf_shapes_and_count():
    params = _init(NeuMF(NU, NI, num_factors=4, layers=(16, 8, 4)))
    shapes = _shapes(params)
    assert shapes["out"]["kernel"] == (4 + 4, 1)
    assert _count(params) == (NU + NI) * (4 + 8) + (16 * 8 + 8) + (8 * 4 + 4) + 8 + 1


def test_initialisation_follows_the_authors():
    params = _init(NeuMF(500, 400, num_factors=32, layers=(64, 32)))["params"]
    emb = np.asarray(params["mf_user"]["embedding"])
    assert abs(emb.std() - 0.01) < 0.001 and abs(emb.mean()) < 0.001  # N(0, 0.01)
    kernel = np.asarray(params["mlp_dense_0"]["kernel"])
    limit = np.sqrt(3.0 / 64)  # LeCun uniform: NU(-sqrt(3 / fan_in), +sqrt(3 / fan_in))
    assert kernel.max() <= limit and kernel.min() >= -limit and kernel.max() > 0.9 * limit


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf", "mf"])
def test_scores_any_id_shape(name):
    """Users [c, 1] against candidates [c, m] (a broadcast) equal c * m pointwise calls."""
    model = create_model(ModelConfig(model=name, num_factors=4, layers=(8, 4)), NU, NI)
    params = _init(model)
    users, items = jnp.array([0, 3, 6]), jnp.arange(15).reshape(3, 5) % NI
    grid = model.apply(params, users[:, None], items)
    flat = model.apply(params, jnp.repeat(users, 5), items.reshape(-1))
    assert grid.shape == (3, 5)
    np.testing.assert_allclose(grid.reshape(-1), flat, rtol=1e-5, atol=1e-7)


def test_concat_dense_is_dense_on_the_concatenation():
    """ConcatDense never builds the concatenation; its outputs and parameters are nn.Dense's."""
    x1 = jax.random.normal(jax.random.key(1), (4, 1, 3))
    x2 = jax.random.normal(jax.random.key(2), (4, 6, 5))
    layer = layers.ConcatDense(7)
    params = layer.init(jax.random.key(0), x1, x2)
    assert jax.tree.map(jnp.shape, params) == {"params": {"kernel": (8, 7), "bias": (7,)}}
    params = jax.tree.map(lambda v: v + 0.1, params)  # a non-zero bias
    joined = jnp.concatenate([jnp.broadcast_to(x1, (4, 6, 3)), x2], axis=-1)
    want = nn.Dense(7).apply(params, joined)
    np.testing.assert_allclose(layer.apply(params, x1, x2), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_pretrained_neumf_logits_are_the_alpha_mix(alpha):
    gmf, mlp = GMF(NU, NI, num_factors=4), MLP(NU, NI, layers=(16, 8, 4))
    neumf = NeuMF(NU, NI, num_factors=4, layers=(16, 8, 4))
    gmf_params, mlp_params = _init(gmf, 1), _init(mlp, 2)
    params = load_pretrained(_init(neumf, 3), gmf_params, mlp_params, alpha=alpha)
    users, items = jnp.arange(NU).repeat(NI), jnp.tile(jnp.arange(NI), NU)
    expected = alpha * gmf.apply(gmf_params, users, items) + (1 - alpha) * mlp.apply(
        mlp_params, users, items
    )
    np.testing.assert_allclose(neumf.apply(params, users, items), expected, rtol=1e-5, atol=1e-6)


def test_pretrained_size_mismatch_names_the_entry():
    neumf = _init(NeuMF(NU, NI, num_factors=4, layers=(16, 8, 4)))
    gmf = _init(GMF(NU, NI, num_factors=8))  # wrong factor count
    mlp = _init(MLP(NU, NI, layers=(16, 8, 4)))
    with pytest.raises(ValueError, match=r"mf_(user|item).*has shape \(\d+, 8\), NeuMF needs"):
        load_pretrained(neumf, gmf, mlp)


def test_registry_builds_every_model_from_a_config():
    """create_model passes each model the config fields it declares (sizes show in the tables)."""
    widths = {"gmf": {"mf": 6}, "mf": {"mf": 6}, "mlp": {"mlp": 5}, "neumf": {"mf": 6, "mlp": 5}}
    for name, want in widths.items():
        assert name in MODELS
        model = create_model(ModelConfig(model=name, num_factors=6, layers=(10, 4)), NU, NI)
        params = _init(model)["params"]
        got = {
            p: params[f"{p}_user"]["embedding"].shape
            for p in ("mf", "mlp")
            if f"{p}_user" in params
        }
        assert got == {prefix: (NU, width) for prefix, width in want.items()}
    with pytest.raises(ValueError, match="unknown model"):
        create_model(ModelConfig(model="nope"), NU, NI)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=(15, 8)), "even"),
        (dict(num_factors=0), "num_factors"),
        (dict(reg_layers=(0.0, 0.1)), "reg_layers"),
        (dict(mf_pretrain="a"), "together"),
        (dict(model="gmf", mf_pretrain="a", mlp_pretrain="b"), "--model=neumf or --model=mlp"),
        (dict(model="mf", mf_pretrain="a"), "not --model=mf"),
    ],
)
def test_bad_model_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("name", ["MLP", "NeuMF", "FeatureNCF", "RatingMLP"])
def test_every_tower_model_refuses_an_odd_embedding_width_and_bad_dropout(name):
    from ncf_jax.models.feature_ncf import FeatureNCF
    from ncf_jax.models.rating import RatingMLP

    cls = {"MLP": MLP, "NeuMF": NeuMF, "FeatureNCF": FeatureNCF, "RatingMLP": RatingMLP}[name]
    cls(NU, NI, layers=(16, 8))  # valid
    with pytest.raises(ValueError, match=f"{name} layers\\[0\\] must be an even"):
        cls(NU, NI, layers=(15, 8))
    if "dropout" in cls.__dataclass_fields__:
        with pytest.raises(ValueError, match=f"{name} dropout must be in"):
            cls(NU, NI, layers=(16, 8), dropout=1.0)


def test_hot_loop_jit_keeps_dense_layers_in_xla_dots():
    """ncf_jax.xla.jit applies its CPU option: no dot of an MLP tower goes to a YNNPACK fusion."""
    from ncf_jax import xla

    if xla.compiler_options() is None:
        pytest.skip("no XLA CPU options on this backend / jax version")
    model = MLP(NU, NI, layers=(64, 32, 16))
    params = _init(model)
    ids = jnp.zeros(256, jnp.int32)
    grad = jax.grad(lambda p: jnp.sum(model.apply(p, ids, ids)))
    hlo = xla.jit(grad).lower(params).compile().as_text()
    assert " dot(" in hlo and "ynn_fusion" not in hlo
