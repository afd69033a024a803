"""The NCF authors' Keras weight files: small files written here in their layout (Keras 1
`save_weights`: `layer_names`, per-layer `weight_names`, Theano-style array names) load into
GMF, MLP and NeuMF, which then score as a NumPy computation of the authors' models; shapes
that do not fit are one line naming the layer; `--epochs=0` evaluates the loaded model."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncf_jax import tasks
from ncf_jax.config import EvalConfig
from ncf_jax.data import synthetic, write_ncf
from ncf_jax.errors import DataError
from ncf_jax.models import create_model, keras
from ncf_jax.tasks import ncf as ncf_task
from ncf_jax.tasks.ncf import NCFModelConfig, NCFTrainConfig

h5py = pytest.importorskip("h5py", reason="h5py is the optional extra 'keras'")

ROOT = pathlib.Path(__file__).resolve().parents[1]
USERS, ITEMS, FACTORS, LAYERS = 40, 50, 4, (8, 6, 4)
DATA = synthetic.planted(num_users=USERS, num_items=ITEMS, num_test_negatives=20)


def _write(path, layers: dict) -> pathlib.Path:
    """A Keras 1 weight file: input / flatten / merge layers hold no arrays, like the authors'."""
    names = ["user_input", "item_input", *layers, "flatten_1", "merge_1"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            group = f.create_group(name)
            arrays = layers.get(name, [])
            suffixes = ["W"] if len(arrays) == 1 else ["W", "b"]
            weight_names = [f"{name}_{s}" for s in suffixes][: len(arrays)]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for weight, array in zip(weight_names, arrays, strict=True):
                group.create_dataset(weight, data=array)
    return path


def _gmf_layers(rng, factors=FACTORS):
    w = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)
    return {"user_embedding": [w(USERS, factors)], "item_embedding": [w(ITEMS, factors)],
            "prediction": [w(factors, 1), w(1)]}  # fmt: skip


def _mlp_layers(rng, sizes=LAYERS):
    w = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)
    layers = {
        "user_embedding": [w(USERS, sizes[0] // 2)],
        "item_embedding": [w(ITEMS, sizes[0] // 2)],
    }
    for k in range(1, len(sizes)):
        layers[f"layer{k}"] = [w(sizes[k - 1], sizes[k]), w(sizes[k])]
    return layers | {"prediction": [w(sizes[-1], 1), w(1)]}


def _gmf_vector(g, u, i):
    return g["user_embedding"][0][u] * g["item_embedding"][0][i]


def _mlp_vector(m, u, i):
    x = np.concatenate([m["user_embedding"][0][u], m["item_embedding"][0][i]], axis=-1)
    for k in range(1, len(LAYERS)):
        x = np.maximum(x @ m[f"layer{k}"][0] + m[f"layer{k}"][1], 0.0)
    return x


def numpy_scores(g, m, u, i):
    """The authors' GMF, MLP and NeuMF (their load_pretrain_model, alpha 0.5) as logits."""
    gmf = _gmf_vector(g, u, i) @ g["prediction"][0][:, 0] + g["prediction"][1][0]
    mlp = _mlp_vector(m, u, i) @ m["prediction"][0][:, 0] + m["prediction"][1][0]
    h = np.concatenate([0.5 * g["prediction"][0], 0.5 * m["prediction"][0]])[:, 0]
    b = 0.5 * (g["prediction"][1][0] + m["prediction"][1][0])
    neumf = np.concatenate([_gmf_vector(g, u, i), _mlp_vector(m, u, i)], axis=-1) @ h + b
    return {"gmf": gmf, "mlp": mlp, "neumf": neumf}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder, rng = tmp_path_factory.mktemp("keras"), np.random.default_rng(0)
    g, m = _gmf_layers(rng), _mlp_layers(rng)
    return g, m, _write(folder / "gmf.h5", g), _write(folder / "mlp.h5", m)


@pytest.mark.parametrize("model", ["gmf", "mlp", "neumf"])
def test_loaded_models_score_as_the_authors(files, model):
    g, m, gmf_file, mlp_file = files
    flags = {"gmf": {"mf_pretrain": str(gmf_file)}, "mlp": {"mlp_pretrain": str(mlp_file)},
             "neumf": {"mf_pretrain": str(gmf_file), "mlp_pretrain": str(mlp_file)}}  # fmt: skip
    config = NCFModelConfig(model=model, num_factors=FACTORS, layers=LAYERS, **flags[model])
    net = create_model(config, USERS, ITEMS)
    params = ncf_task.init_params(net, config, jax.random.key(0))
    users, items = np.arange(USERS), np.arange(USERS) % ITEMS
    got = net.apply(params, jnp.asarray(users), jnp.asarray(items))
    np.testing.assert_allclose(got, numpy_scores(g, m, users, items)[model], rtol=1e-5, atol=1e-5)


def test_whole_model_files_and_keras_2_names_load_too(files, tmp_path):
    g = files[0]
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [n.encode() for n in g]
        for name, arrays in g.items():
            group = weights.create_group(name)
            names = [f"{name}/{w}:0" for w in ("kernel", "bias")[: len(arrays)]]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for n, a in zip(names, arrays, strict=True):
                group.create_dataset(n, data=a)
    layers = keras.read_layers(tmp_path / "whole.h5")
    assert sorted(layers) == sorted(g)
    np.testing.assert_array_equal(layers["prediction"][1], g["prediction"][1])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g | {"item_embedding": [np.zeros((ITEMS, 5), np.float32)]},
         "layer 'item_embedding' embedding has shape (50, 5), ncf_jax's GMF needs (50, 4)"),
        (lambda g: {k: v for k, v in g.items() if k != "prediction"}, "no layer 'prediction'"),
        (lambda g: g | {"layer1": [np.zeros((8, 6), np.float32), np.zeros(6, np.float32)]},
         "layer 'layer1' has no place in ncf_jax's GMF"),
    ],
)  # fmt: skip
def test_a_file_that_does_not_fit_names_the_layer(files, tmp_path, change, message):
    path = _write(tmp_path / "bad.h5", change(files[0]))
    like = create_model(NCFModelConfig(model="gmf", num_factors=FACTORS), USERS, ITEMS).init(
        jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)
    )
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        keras.load(path, "gmf", like)


def _numpy_hr(scores_of, k=5):
    """HR@k of the test pairs against their negatives, ties against the positive."""
    pos = scores_of(DATA.test_users, DATA.test_items)
    users = np.broadcast_to(DATA.test_users[:, None], DATA.test_negatives.shape)
    neg = scores_of(users, DATA.test_negatives)
    return float(np.mean((neg >= pos[:, None]).sum(axis=1) < k))


def test_epochs_0_evaluates_the_authors_neumf(files, tmp_path):
    """The command a user types: NeuMF from the two files, not trained, scored as NumPy's."""
    g, m, gmf_file, mlp_file = files
    write_ncf(DATA, tmp_path, "tiny")
    args = ["--dataset=ncf:tiny", f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'w'}",
            "--epochs=0", f"--num_factors={FACTORS}", "--layers=8,6,4", "--top_k=5",
            f"--mf_pretrain={gmf_file}", f"--mlp_pretrain={mlp_file}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-m", "experiments.neumf", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    want = _numpy_hr(lambda u, i: numpy_scores(g, m, u, i)["neumf"])
    assert results["best_epoch"] == 0 and results["best"]["hr@5"] == pytest.approx(want)
    assert not (tmp_path / "w" / "checkpoints").exists()
    # The same file with a wrong --layers: one line naming the layer, exit status 1.
    bad = subprocess.run([sys.executable, "-m", "experiments.neumf", *args, "--layers=8,6,2",
                          f"--workdir={tmp_path / 'w2'}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [x for x in bad.stderr.splitlines() if x and x[0] not in "IW"]
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(lines) == 1, bad.stderr
    assert "layer 'layer2' kernel has shape (6, 4), ncf_jax's MLP needs (6, 2)" in lines[0]


def test_gmf_starts_from_a_file(files, tmp_path):
    """--model=gmf --mf_pretrain=FILE --epochs=0: the file's GMF, evaluated."""
    g, m, gmf_file, _ = files
    model = NCFModelConfig(model="gmf", num_factors=FACTORS, mf_pretrain=str(gmf_file))
    configs = tasks.configs(ncf_task, model=model, train=NCFTrainConfig(epochs=0),
                            eval=EvalConfig(top_k=5))  # fmt: skip
    results = tasks.train_and_evaluate(ncf_task, DATA, configs, tmp_path / "g")
    want = _numpy_hr(lambda u, i: numpy_scores(g, m, u, i)["gmf"])
    assert results["best_epoch"] == 0 and results["best"]["hr@5"] == pytest.approx(want)
