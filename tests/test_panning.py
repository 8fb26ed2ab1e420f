from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import panning
import panning.cli
from panning.masks import kept_count
from panning.screening.multi_index import (
    PRESETS,
    Panning,
    StageTable,
    _flat,
    _normalize_flat_float32,
    combine,
    normalize,
    weighted_scores,
)

LENET5_WEIGHTS = 430_500


def test_zscore_abs_is_the_reference_formula() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64)
    u = x / x.mean()
    expected = ((u - u.mean()) / u.std()).abs()
    out = normalize({"a": x[:2], "b": x[2:]}, "zscore-abs")
    assert torch.allclose(torch.cat([out["a"], out["b"]]), expected)
    # The absolute value makes the lowest score count like a high one: a flaw of the reference.
    assert out["a"][0] > out["b"][0]


def test_rank_normalization_shares_ties_and_orders_values() -> None:
    out = normalize({"w": torch.tensor([0.0, 0.0, 5.0, 1.0])}, "rank")["w"]
    assert out.tolist() == [0.375, 0.375, 1.0, 0.75]
    signed = normalize({"w": torch.tensor([-1.0, 1.0])}, "zscore")["w"]
    assert signed[0] < 0 < signed[1]


def test_combinations() -> None:
    z = {"synflow": {"w": torch.tensor([4.0, 1.0])}, "snip": {"w": torch.tensor([1.0, 9.0])}}
    assert combine(z, {"synflow": 0.5, "snip": 0.5})["w"].tolist() == [2.5, 5.0]
    assert combine(z, {"synflow": 0.5, "snip": 0.5}, "multiplicative")["w"].tolist() == [2.0, 3.0]
    assert combine(z, {"synflow": 1.0, "snip": 0.0})["w"].tolist() == [4.0, 1.0]


def test_combine_matches_layers_by_name_and_leaves_its_inputs_alone() -> None:
    synflow = {"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([2.0])}
    snip = {"b": torch.tensor([3.0]), "a": torch.tensor([1.0, 9.0])}  # another key order
    combined = combine({"synflow": synflow, "snip": snip}, {"synflow": 0.5, "snip": 0.5}, "multiplicative")
    assert combined["a"].tolist() == [2.0, 3.0]
    assert combined["b"].tolist() == [pytest.approx(6.0**0.5)]
    assert synflow["a"].tolist() == [4.0, 1.0] and snip["a"].tolist() == [1.0, 9.0]
    scores = {"w": torch.tensor([1.0, 3.0])}
    normalize(scores, "zscore-abs")
    assert scores["w"].tolist() == [1.0, 3.0]


@pytest.mark.parametrize("combination", ["additive", "multiplicative"])
def test_a_step_equals_the_public_indices_normalised_and_combined(lenet5, batch, combination) -> None:
    # weighted_scores works on flat vectors in place for speed; its scores must be bit for bit
    # those of the public functions it stands for.
    masks = panning.prune(lenet5, 0.9, "synflow", input_shape=(1, 28, 28), iterations=2)
    generator = torch.Generator().manual_seed(0)
    source = panning.screening.pruning.BatchSource(batch, 2, generator)
    context = panning.screening.pruning.StepContext(1, 1, 0.1, masks, source, (1, 28, 28), generator, None)
    weights = {"synflow": 0.3, "snip": 1.0, "grasp": 0.4}
    step = weighted_scores(lenet5, context, weights, "zscore-abs", combination)

    x, y = panning.screening.pruning.BatchSource(batch, 2, torch.Generator().manual_seed(0)).next()
    loss_aware = panning.scores.loss_aware_scores(lenet5, x, y, masks, 200.0)
    raw = {
        "synflow": panning.scores.synflow(lenet5, masks=masks, input_shape=(1, 28, 28)),
        "snip": loss_aware.snip,
        "grasp": {name: score.abs() for name, score in loss_aware.grasp.items()},
    }
    expected = combine({index: normalize(score) for index, score in raw.items()}, weights, combination)
    assert all(torch.equal(step[name], expected[name]) for name in expected)


@pytest.mark.parametrize("normalization", ["zscore-abs", "zscore", "rank"])
def test_float32_precision_gives_the_float64_scores_within_rounding(lenet5, batch, normalization) -> None:
    masks = panning.prune(lenet5, 0.9, "synflow", input_shape=(1, 28, 28), iterations=2)
    weights = {"synflow": 0.3, "snip": 1.0, "grasp": 0.4}
    steps = {}
    for precision in ("float64", "float32"):
        generator = torch.Generator().manual_seed(0)
        source = panning.screening.pruning.BatchSource(batch, 2, generator)
        context = panning.screening.pruning.StepContext(1, 1, 0.1, masks, source, (1, 28, 28), generator, None)
        steps[precision] = weighted_scores(lenet5, context, weights, normalization, precision=precision)
    for name, exact in steps["float64"].items():
        assert steps["float32"][name].dtype == torch.float32
        assert torch.allclose(steps["float32"][name].double(), exact, rtol=1e-4, atol=1e-4), name
    with pytest.raises(ValueError, match="unknown precision 'float16'; valid: float64, float32"):
        weighted_scores(lenet5, context, weights, precision="float16")


def test_float32_precision_takes_float64_scores_beyond_float32s_range() -> None:
    # SynFlow's float64 products can lie far outside float32: scaled by their mean magnitude first.
    huge = {"a": torch.tensor([1e300, 3e300], dtype=torch.float64), "b": torch.tensor([2e300], dtype=torch.float64)}
    tiny = {name: score * 1e-300 * 1e-300 for name, score in huge.items()}
    for scores in (huge, tiny):
        flat = _flat(scores, torch.float32)
        assert flat.dtype == torch.float32 and torch.allclose(flat.double(), torch.tensor([0.5, 1.5, 1.0]).double())
        expected = torch.cat(list(normalize(scores, "zscore-abs").values())).float()
        assert torch.allclose(_normalize_flat_float32(flat, "zscore-abs"), expected)


def test_precision_is_float32_by_default_and_float64_keeps_the_identity_from_before(lenet5, batch) -> None:
    assert Panning().identity()["precision"] == "float32" == Panning().precision
    assert "precision" not in Panning(precision="float64").identity()
    assert panning.pruning.resolved_options("panning", {"precision": "float64"}).get("precision") is None
    assert panning.pruning.resolved_options("panning", {})["precision"] == "float32"
    with pytest.raises(ValueError, match="unknown precision 'half'; valid: float64, float32"):
        Panning(precision="half")
    fast = panning.prune(lenet5, 0.99, "panning", data=batch, iterations=3, seed=0, precision="float32")
    assert fast.kept() == kept_count(LENET5_WEIGHTS, 0.99) and fast.metadata["options"]["precision"] == "float32"


def test_grasp_interval_reuses_the_last_grasp_scores_between_recomputations(lenet5, batch, monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    source = panning.screening.pruning.BatchSource(batch, 2, generator)
    first = panning.prune(lenet5, 0.9, "synflow", input_shape=(1, 28, 28), iterations=1)
    second = panning.prune(lenet5, 0.95, "synflow", input_shape=(1, 28, 28), iterations=1)
    weights = {"synflow": 0.3, "snip": 1.0, "grasp": 0.4}
    cache: dict = {}
    computed = []
    loss_aware_scores = panning.scores.loss_aware_scores

    def spy(*args, **kwargs):
        computed.append(kwargs["want_grasp"])
        return loss_aware_scores(*args, **kwargs)

    monkeypatch.setattr(panning.scores, "loss_aware_scores", spy)
    steps, reused = [], []
    for step, masks in enumerate([first, second, second], start=1):
        context = panning.screening.pruning.StepContext(step, 3, 0.1, masks, source, (1, 28, 28), generator, None)
        context.cache = cache
        steps.append(weighted_scores(lenet5, context, weights, grasp_interval=2))
        reused.append(context.info["grasp_reused"])
    assert computed == [True, False, True] and reused == [False, True, False]
    # Step 2: SNIP and SynFlow of its own masks and batch, GraSP of step 1's.
    replay = panning.screening.pruning.BatchSource(batch, 2, torch.Generator().manual_seed(0))
    x1, y1 = replay.next()
    x2, y2 = replay.next()
    grasp = loss_aware_scores(lenet5, x1, y1, first, 200.0).grasp
    raw = {
        "synflow": panning.scores.synflow(lenet5, masks=second, input_shape=(1, 28, 28)),
        "snip": loss_aware_scores(lenet5, x2, y2, second, 200.0).snip,
        "grasp": {name: score.abs() for name, score in grasp.items()},
    }
    expected = combine({index: normalize(score) for index, score in raw.items()}, weights)
    assert all(torch.equal(steps[1][name], expected[name]) for name in expected)


def test_grasp_interval_one_is_the_default_and_keeps_the_identity(lenet5, batch) -> None:
    assert "grasp_interval" not in Panning().identity() and Panning().grasp_interval == 1
    assert Panning(grasp_interval=3).identity()["grasp_interval"] == 3
    default = panning.prune(lenet5, 0.99, "panning", data=batch, iterations=4, seed=0)
    every_step = panning.prune(lenet5, 0.99, "panning", data=batch, iterations=4, seed=0, grasp_interval=1)
    stale = panning.prune(lenet5, 0.99, "panning", data=batch, iterations=4, seed=0, grasp_interval=2)
    assert all(torch.equal(default[name], every_step[name]) for name in default)
    assert not all(torch.equal(default[name], stale[name]) for name in default)
    assert stale.kept() == default.kept() and stale.metadata["options"]["grasp_interval"] == 2
    with pytest.raises(ValueError, match="grasp_interval must be a positive integer .*got 0"):
        Panning(grasp_interval=0)
    with pytest.raises(TypeError, match="grasp_interval must be a positive integer .*got '2'"):
        Panning(grasp_interval="2")
    assert Panning(grasp_interval=np.int64(2)).identity()["grasp_interval"] == 2


def test_stages_follow_the_reference_boundaries_one_step_at_a_time() -> None:
    method = Panning(stages="paper")
    schedule = panning.masks.density_schedule(0.999, 100)
    stages = [method.weights_for(t, k)[0] for t, k in enumerate(schedule, start=1)]
    assert stages[0] == 1 and stages[-1] == 5 and stages == sorted(stages)
    first_in = {s: stages.index(s) + 1 for s in range(1, 6)}
    for stage, boundary in zip(range(2, 6), PRESETS[("paper", "additive")].boundaries):
        assert 1 - schedule[first_in[stage] - 1] > boundary >= 1 - schedule[first_in[stage] - 2]
    # One step straight to 0.999 moves only one stage, as the reference does.
    assert Panning(combination="additive").weights_for(1, 0.001) == (2, {"synflow": 0.2, "snip": 0.4, "grasp": 0.4})
    # The default is the automatic additive table; a combination named alone picks the paper's table.
    assert (Panning().combination, Panning().stages) == ("additive", "auto")
    assert Panning(combination="multiplicative").table == PRESETS[("paper", "multiplicative")]
    assert Panning(combination="additive").table == PRESETS[("paper", "additive")]
    assert Panning(stages="paper").combination == "multiplicative"  # the paper table's former default
    assert Panning(normalization="zscore", stages="paper").combination == "additive"  # a product needs z >= 0


def test_the_automatic_table_keeps_synflow_on_convolutional_networks_only() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40) % 10
    for net, chosen in ((conv, "agent-floor"), (mlp, "agent")):
        automatic = panning.prune(net, 0.98, "panning", data=(x, y), iterations=6, seed=1)
        named = panning.prune(net, 0.98, "panning", data=(x, y), iterations=6, seed=1, stages=chosen)
        other = "agent" if chosen == "agent-floor" else "agent-floor"
        unchosen = panning.prune(net, 0.98, "panning", data=(x, y), iterations=6, seed=1, stages=other)
        assert automatic.digest() == named.digest() != unchosen.digest(), chosen
    # The floor: SynFlow keeps a weight of 0.4 or more at every stage, past 0.98 too.
    assert min(weights[0] for weights in PRESETS[("agent-floor", "additive")].weights) == 0.4
    assert Panning().identity()["stages"] == "auto"
    with pytest.raises(ValueError, match="stages='auto' chooses between additive tables"):
        Panning(stages="auto", combination="multiplicative")


def test_the_agent_table_is_an_additive_preset_named_in_the_identity() -> None:
    method = Panning(combination="additive", stages="agent")
    assert method.table == PRESETS[("agent", "additive")] and method.identity()["stages"] == "agent"
    # SNIP leads at every stage and SynFlow is off past 0.99, the reverse of the paper's table.
    assert all(weights[1] == max(weights) for weights in method.table.weights)
    assert method.weights_for(1, 0.001) == (2, {"synflow": 0.5, "snip": 1.0, "grasp": 0.8})
    with pytest.raises(ValueError, match="'agent' is for the additive combination, not 'multiplicative'"):
        Panning(combination="multiplicative", stages="agent")


def test_stage_tables_from_files_and_bad_tables(tmp_path: Path) -> None:
    toml = tmp_path / "stages.toml"
    toml.write_text("[[stages]]\nuntil = 0.9\nsnip = 1.0\n\n[[stages]]\nuntil = 1.0\nsynflow = 1.0\n")
    table = StageTable.from_file(toml)
    assert table.weights == ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)) and table.boundaries == (0.9, 1.0)
    as_json = tmp_path / "stages.json"
    as_json.write_text(json.dumps(table.as_dict()))
    assert StageTable.from_file(as_json) == table
    with pytest.raises(ValueError, match="unknown key"):
        StageTable.from_mapping({"stages": [{"until": 1.0, "force": 1.0}]})
    with pytest.raises(ValueError, match="increase"):
        StageTable((0.9, 0.8), ((1, 0, 0), (0, 1, 0)))
    with pytest.raises(ValueError, match="no stage table file"):
        Panning(stages=str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    "options",
    [{}, {"normalization": "rank"}, {"combination": "additive"}, {"normalization": "zscore", "grasp": "signed"}],
)
def test_panning_keeps_exactly_k_and_is_deterministic(lenet5, batch, options) -> None:
    def run() -> panning.Masks:
        return panning.prune(lenet5, 0.99, "panning", data=batch, iterations=4, samples_per_class=3, **options)

    first = run()
    assert first.kept() == kept_count(LENET5_WEIGHTS, 0.99)
    assert first.equal(run())


def test_each_index_is_computed_once_per_step_from_one_loss(lenet5, batch, monkeypatch) -> None:
    calls = {"loss_aware": 0, "synflow": 0}
    original_loss_aware, original_synflow = panning.scores.loss_aware_scores, panning.scores.synflow

    def loss_aware(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["loss_aware"] += 1
        return original_loss_aware(*args, **kwargs)

    def synflow(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["synflow"] += 1
        return original_synflow(*args, **kwargs)

    monkeypatch.setattr(panning.scores, "loss_aware_scores", loss_aware)
    monkeypatch.setattr(panning.scores, "synflow", synflow)
    panning.prune(lenet5, 0.9, "panning", data=batch, iterations=5)
    assert calls == {"loss_aware": 5, "synflow": 5}


def test_panning_scores_the_masked_network(lenet5, batch) -> None:
    records: list[panning.screening.pruning.StepRecord] = []
    panning.prune(lenet5, 0.99, "panning", data=batch, iterations=3, callback=lambda r, m: records.append(r))
    losses = [r.info["loss"] for r in records]
    assert len(set(losses)) == 3  # the loss moves with the mask (the reference's dense-network bug would not)
    assert [r.info["stage"] for r in records] == [1, 2, 3]


@pytest.mark.slow
def test_panning_at_0999_on_lenet5_keeps_431_with_no_layer_collapsed(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    trace = tmp_path / "trace.csv"
    result = CliRunner().invoke(
        panning.cli.cli,
        [
            "prune",
            "--model",
            "lenet5",
            "--dataset",
            "mnist",
            "--method",
            "panning",
            "--sparsity",
            "0.999",
            "--out",
            str(out),
            "--trace",
            str(trace),
            "--val-size",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "screening time" in result.output and "COLLAPSE" not in result.output
    masks = panning.masks.load(out)
    assert masks.kept() == 431 and masks.metadata["collapsed_layers"] == []
    lines = trace.read_text().splitlines()
    assert len(lines) == 101 and lines[0].startswith("step,density,kept")


def test_panning_only_options_are_refused_for_other_methods(data_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        panning.cli.cli,
        [
            "prune",
            "--model",
            "lenet300",
            "--dataset",
            "mnist",
            "--method",
            "snip",
            "--sparsity",
            "0.9",
            "--combination",
            "multiplicative",
            "--val-size",
            "50",
            "--out",
            str(tmp_path / "m.safetensors"),
        ],
    )
    assert (
        result.exit_code == 2
        and "--combination is not an option of --method snip (its options: temperature)" in result.output
    )


def test_the_old_module_paths_still_import() -> None:
    """The screening modules moved into panning.screening, the sparse-kernel and inference modules
    into panning.compaction (issue #18); user code importing them from their old places gets the
    same modules, not copies with registries of their own."""
    import importlib

    from panning.panning import Panning as Old  # the module was panning/panning.py before

    assert Old is panning.screening.multi_index.Panning
    for name in ("pruning", "scores", "multi_index", "prospr", "layerwise"):
        assert importlib.import_module(f"panning.{name}") is importlib.import_module(f"panning.screening.{name}")
    for name in ("sparse", "inference"):
        assert importlib.import_module(f"panning.{name}") is importlib.import_module(f"panning.compaction.{name}")
    from panning.sparse import save_sparse

    assert save_sparse is panning.compaction.save_sparse
