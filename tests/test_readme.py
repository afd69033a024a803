"""The README's promises, run: its model example scores both call layouts against a NumPy
reference and trains through the NCF task once registered; its two commands are the ones the
lock files and CI expect; it stays a front door."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import models, tasks
from ncf_jax.data import synthetic, write_ncf

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

MAIN = (
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements/main.lock && "
    ".venv/bin/pip install -q --no-deps -e . && .venv/bin/python -m experiments.neumf "
    "--flagfile=experiments/configs/ml100k_neumf.flags"
)
TESTS = (
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements/test.lock && "
    ".venv/bin/pip install -q --no-deps -e . && .venv/bin/ruff check . && "
    ".venv/bin/ruff format --check . && .venv/bin/mkdocs build --strict -q && "
    ".venv/bin/python -m pytest -q"
)


def _example(name: str) -> dict:
    """The namespace of the README's python block between `<!-- example:NAME -->` markers."""
    block = README.split(f"<!-- example:{name} -->", 1)[1].split(f"<!-- /example:{name} -->")[0]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_model_example_scores_training_and_evaluation_layouts():
    model = _example("model")["BiasedDot"](num_users=5, num_items=7, num_factors=3)
    users, items = jnp.array([0, 1, 4]), jnp.array([6, 0, 2])
    variables = model.init(jax.random.key(0), users, items)
    params = jax.tree.map(np.asarray, variables["params"])
    p, q = params["user"]["embedding"], params["item"]["embedding"]
    b = params["item_bias"]["embedding"][:, 0]
    assert model.apply(variables, users, items).shape == (3,)
    np.testing.assert_allclose(
        model.apply(variables, users, items), (p[users] * q[items]).sum(-1) + b[items], rtol=1e-6
    )
    candidates = np.array([[0, 1], [2, 3], [4, 5]])  # [users, candidates], as evaluation calls
    scores = model.apply(variables, users[:, None], jnp.asarray(candidates))
    expected = (p[np.asarray(users)][:, None, :] * q[candidates]).sum(-1) + b[candidates]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_the_model_example_trains_through_the_ncf_task(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "biased_dot", _example("model")["BiasedDot"])
    data = synthetic.planted(num_users=40, num_items=50, num_test_negatives=20)
    write_ncf(data, tmp_path, "tiny")
    options = {"dataset": "ncf:tiny", "data_dir": str(tmp_path), "model": "biased_dot",
               "num_factors": 4, "epochs": 2, "batch_size": 64, "top_k": 5}  # fmt: skip
    configs = tasks.configs_from_options(tasks.ncf, options)
    loaded = tasks.ncf.load_data(configs)
    results = tasks.train_and_evaluate(tasks.ncf, loaded, configs, tmp_path / "w", plot=False)
    assert results["model"] == "biased_dot" and len(results["history"]) == 2
    assert results["best"]["hr@5"] > results["init"]["hr@5"]  # it learned the planted clusters


def test_the_two_commands_are_the_locked_ones():
    assert f"```bash\n{MAIN}\n```" in README
    assert f"```bash\n{TESTS}\n```" in README
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == TESTS, "CI runs exactly the README's test command"
    for lock in ("main", "test"):  # both install from a lock of exact, hashed versions
        text = (ROOT / "requirements" / f"{lock}.lock").read_text()
        assert "--hash=sha256:" in text and "\njax==" in text


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 260


def test_every_library_module_is_in_the_api_reference():
    """A new module of ncf_jax/ gets its `::: ncf_jax.NAME` line (private and plumbing modules
    aside), so the reference cannot silently miss it."""
    api = (ROOT / "docs" / "api.md").read_text()
    plumbing = {"__init__", "entry", "flags", "xla"}
    missing = [
        f"{prefix}{path.stem}"
        for folder, prefix in ((ROOT / "ncf_jax", ""), (ROOT / "ncf_jax" / "commands", "commands."))
        for path in folder.glob("*.py")
        if path.stem not in plumbing and f"::: ncf_jax.{prefix}{path.stem}\n" not in api
    ]
    assert not missing, f"add to docs/api.md: {missing}"
