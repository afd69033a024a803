"""Stage: the paper's experiments as data. Which models, which cells, which table or figure.

A cell is one task configuration ({flag: value}, as on the command line) trained with all seeds
at once in one folder. An experiment maps its points (a table row, a curve's x) to cells;
identical configurations are the same cell, so Table 2's factor-8 NeuMF is Figure 4's factor-8
point, Figure 5's and Figure 6's NeuMF, and Figure 7's 16-factor, 4-negative points are Figure
4's factor-16 cells. NeuMF with pre-training depends on the GMF and MLP cells of the same size
and negatives (`Model.pretrain`), which run first.

A baseline (ItemKNN, iALS, EASE, MF-BPR, ...) joins the figures with one `MODELS` entry: its
task (a key of `ncf_jax.tasks.TASKS`), its options for a predictive factor (return the same
options for every factor when it has none: the cell is then shared along Figure 4's x axis)
and the figures it appears in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable

from ncf_jax import config, tasks
from ncf_jax.tasks.classic import IALS_SWEEPS
from ncf_jax.tasks.ncf import BPR_OPTIONS

FACTORS = (8, 16, 32, 64)
NEGATIVES = tuple(range(1, 11))
HIDDEN_LAYERS = (0, 1, 2, 3, 4)
CUTOFFS = tuple(range(1, 11))
FIGURE5_FACTOR, FIGURE6_FACTOR, FIGURE7_FACTOR = 8, 8, 16

# The paper's settings (section 4.1) and the authors' code: these are the cells' options
# unless an experiment varies one.
PAPER_OPTIONS = {
    "num_neg": 4,
    "batch_size": 256,
    "learner": "adam",
    "learning_rate": 0.001,
    "pretrain_learner": "sgd",  # the paper's text: NeuMF continues from GMF + MLP with SGD
    "alpha": 0.5,
    "top_k": 10,
    "eval_protocol": "sampled",
    "epochs": 20,
}


def tower(factor: int, hidden: int = 3) -> tuple[int, ...]:
    """The authors' `--layers` for `factor` predictive factors (the last hidden layer's width)
    and `hidden` hidden layers: halving widths, layers[0] the concatenated embeddings.

    >>> tower(8), tower(8, 1), tower(8, 0)
    ((64, 32, 16, 8), (16, 8), (8,))

    With no hidden layer (MLP-0) the concatenated embeddings, `factor // 2` per side, are the
    predictive factors: they go straight to the output layer.
    """
    return tuple(factor * 2**i for i in range(hidden, -1, -1))


@dataclasses.dataclass(frozen=True)
class Model:
    """One curve of the figures.

    label: its name in tables and legends.
    options: `options(factor) -> {flag: value}` of its task.
    task: a key of `ncf_jax.tasks.TASKS`.
    pretrain: {flag: model key}: the flags that take the trained cells of those models (same
      factor, same other options) as their initialisation (NeuMF's --mf_pretrain/--mlp_pretrain).
    figures: the figures it is drawn in.
    """

    label: str
    options: Callable[[int], dict]
    task: str = "ncf"
    pretrain: dict = dataclasses.field(default_factory=dict)
    figures: tuple[str, ...] = ("figure4", "figure5", "figure6", "figure7")


BASELINE_FIGURES = ("figure4", "figure5")
MODELS = {
    "gmf": Model("GMF", lambda f: {"model": "gmf", "num_factors": f}),
    "mlp": Model("MLP", lambda f: {"model": "mlp", "num_factors": f, "layers": tower(f)}),
    # "NeuMF" in the figures is the paper's best variant, pre-trained (Table 2, section 4.2).
    "neumf": Model(
        "NeuMF",
        lambda f: {"model": "neumf", "num_factors": f, "layers": tower(f)},
        pretrain={"mf_pretrain": "gmf", "mlp_pretrain": "mlp"},
    ),
    # Trained for Table 2 anyway, so drawn where it costs nothing more (not in Figure 7).
    "neumf_scratch": Model(
        "NeuMF (no pre-training)",
        lambda f: {"model": "neumf", "num_factors": f, "layers": tower(f)},
        figures=("figure4", "figure5", "figure6"),
    ),
    # Baselines (the paper compares eALS and BPR; ItemKNN is its neighbourhood baseline), at
    # their default settings: MF-BPR on the same sampler and epoch (one negative per positive,
    # as Rendle et al. train it), iALS with `factor` dimensions, ItemKNN once for every factor.
    "mf_bpr": Model(
        "MF-BPR",
        lambda f: {"model": "mf", "num_factors": f, **BPR_OPTIONS},
        figures=BASELINE_FIGURES,
    ),
    "ials": Model(
        "iALS",
        lambda f: {"model": "ials", "ials_factors": f, "epochs": IALS_SWEEPS},
        task="classic",
        figures=BASELINE_FIGURES,
    ),
    "itemknn": Model(
        "ItemKNN",
        lambda f: {"model": "itemknn", "epochs": 1, "num_seeds": 1},  # deterministic
        task="classic",
        figures=BASELINE_FIGURES,
    ),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One trained configuration: `options` of `task`, with `pretrain` ({flag: Cell}) cells
    whose trained replicas initialise this one's."""

    task: str
    options: tuple  # sorted (flag, value) pairs, so equal configurations are equal cells
    pretrain: tuple = ()  # sorted (flag, Cell) pairs

    @property
    def values(self) -> dict:
        return dict(self.options)

    @property
    def name(self) -> str:
        """A readable, unique folder name: model, sizes, negatives, then a hash of the rest."""
        o = self.values
        parts = [o.get("model", self.task)]
        parts += [f"f{o['num_factors']}"] if "num_factors" in o else []
        parts += [f"f{o['ials_factors']}"] if "ials_factors" in o else []
        parts += ["l" + "-".join(map(str, o["layers"]))] if "layers" in o else []
        parts += [f"neg{o['num_neg']}"] if "num_neg" in o else []
        parts += ["pre"] if self.pretrain else []
        ident = json.dumps([self.task, self.options, [(k, c.name) for k, c in self.pretrain]])
        return "_".join(map(str, parts)) + "_" + hashlib.sha1(ident.encode()).hexdigest()[:8]

    @property
    def label(self) -> str:
        return self.name.rsplit("_", 1)[0]


def known_options(task: str) -> set[str]:
    """The options (flag names) `task` reads."""
    module = tasks.TASKS[task]
    return {config.flag_name(f) for cls in module.CONFIGS.values() for f in dataclasses.fields(cls)}


def make_cell(key: str, factor: int, *, base: dict, **changes) -> Cell:
    """The cell of model `key` at `factor` with the `base` options and `changes`; options its
    task does not read are left out (a baseline has no --num_neg), so they never split cells."""
    model = MODELS[key]
    options = {**base, **model.options(factor), **changes}
    options = {k: v for k, v in options.items() if k in known_options(model.task)}
    if not model.pretrain:
        options.pop("pretrain_learner", None)  # only read after pre-training
        options.pop("alpha", None)
    pretrain = tuple(
        sorted((flag, make_cell(dep, factor, base=base, **changes)) for flag, dep in
               model.pretrain.items())
    )  # fmt: skip
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
    return Cell(model.task, frozen, pretrain)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The paper's axes; tests shrink them."""

    factors: tuple[int, ...] = FACTORS
    negatives: tuple[int, ...] = NEGATIVES
    hidden_layers: tuple[int, ...] = HIDDEN_LAYERS
    figure5_factor: int = FIGURE5_FACTOR
    figure6_factor: int = FIGURE6_FACTOR
    figure7_factor: int = FIGURE7_FACTOR


PAPER_GRID = Grid()


def experiments(base: dict, grid: Grid = PAPER_GRID) -> dict[str, dict]:
    """{experiment: {point: Cell}}; points are tuples (see each experiment's table or plot)."""
    g, cell = grid, functools.partial(make_cell, base=base)
    variants = (("with", "neumf"), ("without", "neumf_scratch"))
    models = lambda figure: [key for key, m in MODELS.items() if figure in m.figures]
    return {
        "table2": {(f, v): cell(key, f) for f in g.factors for v, key in variants},
        "figure4": {(key, f): cell(key, f) for key in models("figure4") for f in g.factors},
        "figure5": {(key,): cell(key, g.figure5_factor) for key in models("figure5")},
        "figure6": {(key,): cell(key, g.figure6_factor) for key in models("figure6")},
        "figure7": {(key, n): cell(key, g.figure7_factor, num_neg=n) for key in models("figure7")
                    for n in g.negatives},
        "tables34": {(f, x): cell("mlp", f, layers=tower(f, x)) for f in g.factors
                     for x in g.hidden_layers},
    }  # fmt: skip


EXPERIMENTS = ("table2", "figure4", "figure5", "figure6", "figure7", "tables34")


def cells_in_order(plan: dict[str, dict]) -> list[Cell]:
    """The distinct cells of `plan`, each after the cells it is pre-trained from, in the order
    the experiments name them."""
    order: list[Cell] = []

    def visit(cell: Cell) -> None:
        for _, dep in cell.pretrain:
            visit(dep)
        if cell not in order:
            order.append(cell)

    for points in plan.values():
        for cell in points.values():
            visit(cell)
    return order


def cost(cell: Cell) -> float:
    """Relative cost of a cell, for the progress line's time estimate: samples x (multiply-adds
    of the dense layers + a constant for the rest of a sample's step: sampling, lookups, Adam)
    + a constant for compiling and checkpointing; constants fitted to the README's speed table
    (GMF-32 0.35 s, NeuMF-8 0.5 s, NeuMF-32 2 s an epoch on ML-100K)."""
    o = cell.values
    widths = list(o.get("layers", ())) if o.get("model") != "gmf" else []
    dense = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    samples = o.get("epochs", 20) * (1 + o.get("num_neg", 4))
    return samples * (8000 + dense + o.get("num_factors", 0)) + 600_000
