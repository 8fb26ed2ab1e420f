"""The panning agent: the Gymnasium environment, TD3 training, and rl-panning screening."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch import nn

import panning
from panning.agent import AgentInfo, PanningEnv, index_weights, load_agent, parse_targets, train_agent
from panning.agent.learning import RLPanning
from panning.cli import cli


def small_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.fixture(scope="module")
def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(80, 1, 4, 4, generator=generator), torch.arange(80) % 4


def record(iterations: int) -> AgentInfo:
    return AgentInfo(
        iterations=iterations,
        targets=[[0.5, 0.9]],
        models=["small"],
        dataset="random",
        samples_per_class=2,
        normalization="zscore-abs",
        combination="additive",
        temperature=200.0,
        timesteps=0,
        seed=0,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> Path:
    """An agent trained for a few dozen steps (a few seconds): enough to save, load and screen."""
    out = tmp_path_factory.mktemp("agent") / "agent.zip"
    torch.manual_seed(0)
    env = PanningEnv(small_net, tiny_data, targets=[(0.5, 0.9)], iterations=4, samples_per_class=2)
    train_agent(env, 40, out, record(4), learning_starts=10, batch_size=16, progress=False, checkpoint_every=20)
    return out


def wide_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 4))


def test_env_passes_gymnasium_and_sb3_checkers(tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, iterations=3, samples_per_class=2)
    gymnasium_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    # Several models take turns (the shipped agent's setting): a seeded reset still decides the episode.
    several = PanningEnv([small_net, wide_net], tiny_data, iterations=3, samples_per_class=2)
    gymnasium_check_env(several, skip_render_check=True)


def test_evaluation_episodes_give_every_model_every_target(tiny_data) -> None:
    targets = [(0.9, 0.9), (0.99, 0.99)]
    env = PanningEnv([small_net, wide_net], tiny_data, targets=targets, iterations=2, cycle_targets=True)
    env.reset(seed=0)
    pairs = [(env.model[1].out_features, env.target)]
    for _ in range(3):
        env.reset()
        pairs.append((env.model[1].out_features, env.target))
    assert pairs == [(12, 0.9), (12, 0.99), (20, 0.9), (20, 0.99)]


def test_episode_follows_the_schedule_and_ends_with_exactly_k(tiny_data) -> None:
    model = small_net()
    total = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    env = PanningEnv(model, tiny_data, iterations=5, samples_per_class=2)
    observation, info = env.reset(seed=1, options={"target": 0.8})
    assert info["target"] == 0.8 and observation[6] == 0.0
    kept, terminated, step = [], False, 0
    while not terminated:
        observation, reward, terminated, truncated, info = env.step(np.array([0.0, 0.5, -0.5], dtype=np.float32))
        step += 1
        kept.append(info["kept"])
        assert reward <= 0 and not truncated
        assert info["w_snip"] == 1.5 and info["w_grasp"] == 0.5
        assert env.observation_space.contains(observation)
    assert step == 5 and kept == sorted(kept, reverse=True)
    assert kept[-1] == round(0.2 * total) == info["masks"].kept()
    assert observation[6] == 1.0 and info["target_sparsity"] == pytest.approx(0.8)
    # The reward is the sum of its reported parts when the network is not cut.
    assert info["reward_schedule"] + info["reward_loss"] + info["reward_gtg"] == pytest.approx(reward)


def test_first_observation_carries_the_target(tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, iterations=10, samples_per_class=2)
    low = env.reset(seed=0, options={"target": 0.9})[0]
    high = env.reset(seed=0, options={"target": 0.99})[0]
    assert high[5] > low[5] > 0
    np.testing.assert_array_equal(low[:5], high[:5])  # nothing but the target differs before step 1
    np.testing.assert_array_equal(low[:5], [1.0, 1.0, 0.0, 0.0, 0.0])


def test_cutting_the_network_ends_the_episode_with_the_remaining_steps_as_penalty(tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, iterations=10, samples_per_class=2)
    env.reset(seed=0, options={"target": 0.999})  # from step 7 on, 2 weights or fewer of 272 span no 3 layers
    step, terminated = 0, False
    while not terminated:
        step += 1
        _, reward, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
    assert step <= 7 and info["effective_sparsity"] == 1.0
    assert info["collapsed_layers"] >= 1
    parts = info["reward_schedule"] + info["reward_loss"] + info["reward_gtg"]
    assert reward == pytest.approx(parts - (10 - step))


def test_targets_are_drawn_from_the_ranges_and_cycled_for_evaluation(tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, targets=[(0.9, 0.95), (0.98, 0.99)], iterations=2, samples_per_class=2)
    env.reset(seed=0)
    drawn = [env.reset()[1]["target"] for _ in range(40)]
    assert all(0.9 <= t <= 0.95 or 0.98 <= t <= 0.99 for t in drawn)
    assert any(t < 0.95 for t in drawn) and any(t > 0.98 for t in drawn)
    cycle = PanningEnv(small_net, tiny_data, targets=[(0.9, 0.9), (0.99, 0.99)], iterations=2, cycle_targets=True)
    cycle.reset(seed=0)
    assert [cycle.reset()[1]["target"] for _ in range(3)] == [0.99, 0.9, 0.99]
    assert cycle.reset(seed=1)[1]["target"] == 0.9  # a seeded reset starts the cycle again


def test_a_model_factory_gives_each_episode_a_new_initialisation(tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, iterations=2, samples_per_class=2)
    env.reset(seed=0)
    first = env.model[1].weight.clone()
    env.reset(seed=1)
    assert not torch.equal(first, env.model[1].weight)
    env.reset(seed=0)
    assert torch.equal(first, env.model[1].weight)


def test_action_and_target_parsing() -> None:
    assert index_weights([-1, -1, -1]) == {"synflow": 1.0, "snip": 1.0, "grasp": 1.0}
    assert index_weights([2.0, -3.0, 0.0]) == {"synflow": 2.0, "snip": 0.0, "grasp": 1.0}
    with pytest.raises(panning.UserError, match="3 finite numbers"):
        index_weights([0.0, 0.0])
    assert parse_targets("0.99") == ((0.99, 0.99),)
    with pytest.raises(panning.UserError, match="LOW:HIGH"):
        parse_targets("0.8-1.0")
    with pytest.raises(panning.UserError, match="low <= high"):
        parse_targets("0.9:0.8")


def test_rl_panning_replays_the_deterministic_episode_of_its_agent(trained: Path, tiny_data) -> None:
    agent, info = load_agent(trained)
    assert info.iterations == 4 and info.timesteps == 40 and info.seconds > 0
    torch.manual_seed(3)
    model = small_net()
    # Without iterations or samples_per_class the episode is the agent's own: 4 steps, 2 per class.
    masks = panning.prune(model, 0.85, "rl-panning", data=tiny_data, seed=5, agent=str(trained))
    assert masks.metadata["iterations"] == 4 and masks.metadata["samples_per_class"] == 2
    # The masks name the agent by content, not only by a path that a retraining could reuse.
    assert masks.metadata["method_files"]["agent"]["sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    env = PanningEnv(model, tiny_data, iterations=4, samples_per_class=2)
    observation, _ = env.reset(seed=5, options={"target": 0.85})
    terminated = False
    while not terminated:
        observation, _, terminated, _, step_info = env.step(agent.predict(observation, deterministic=True)[0])
    assert masks.kept() == step_info["masks"].kept() == round(0.15 * masks.total())
    for name in masks:
        assert torch.equal(masks[name], step_info["masks"][name])


def test_training_resumes_from_its_last_checkpoint(trained: Path, tiny_data) -> None:
    env = PanningEnv(small_net, tiny_data, targets=[(0.5, 0.9)], iterations=4, samples_per_class=2)
    with pytest.raises(panning.UserError, match="--resume"):
        train_agent(env, 60, trained, record(4), progress=False)
    before = load_agent(trained)[1].seconds
    agent = train_agent(env, 60, trained, record(4), resume=True, progress=False, checkpoint_every=20)
    assert agent.num_timesteps == 60
    resumed = load_agent(trained)[1]
    assert resumed.timesteps == 60
    assert resumed.seconds > before  # the checkpoint's seconds carry over into the resumed run
    finished = trained.read_bytes()
    with pytest.raises(panning.UserError, match="already holds the agent of all 60 steps"):
        train_agent(env, 60, trained, record(4), resume=True, progress=False, checkpoint_every=20)
    assert trained.read_bytes() == finished  # the finished agent, not its last checkpoint
    other_targets = dataclasses.replace(record(4), targets=[[0.9, 0.99]])
    for changed, message in ((record(5), "iterations = 4, not 5"), (other_targets, r"targets = \[\[0.5, 0.9\]\]")):
        with pytest.raises(panning.UserError, match=message):
            train_agent(env, 80, trained, changed, resume=True, progress=False)
    for learner, message in (
        ({"learning_starts": 5}, "learning_starts 10, not 5.*without --learning-starts"),
        ({"batch_size": 32}, "batch_size 16, not 32.*without batch_size="),
    ):
        with pytest.raises(panning.UserError, match=message):  # the checkpoint's TD3 would ignore them
            train_agent(env, 80, trained, record(4), resume=True, progress=False, **learner)
    assert load_agent(trained)[1].timesteps == 60  # refused before anything was written
    other_data = dataclasses.replace(record(4), input_normalization="half")
    with pytest.raises(panning.UserError, match="input_normalization = None, not 'half'"):
        train_agent(env, 80, trained, other_data, resume=True, progress=False)
    fresh = trained.with_name("other.zip")
    with pytest.raises(panning.UserError, match="nothing to resume"):
        train_agent(env, 60, fresh, record(4), resume=True, progress=False)
    fresh.write_bytes(b"an agent trained without checkpoints")
    with pytest.raises(panning.UserError, match="other.zip already exists"):
        train_agent(env, 60, fresh, record(4), progress=False)
    assert fresh.read_bytes() == b"an agent trained without checkpoints"


def test_loading_something_else_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(panning.UserError, match="no agent at"):
        load_agent(tmp_path / "missing.zip")
    bogus = tmp_path / "bogus.zip"
    with zipfile.ZipFile(bogus, "w") as archive:
        archive.writestr("hello.txt", "not an agent")
    with pytest.raises(panning.UserError, match="not a panning agent"):
        load_agent(bogus)


def test_the_shipped_agent_screens_lenet5_at_099_with_exactly_k_and_no_collapse(lenet5, batch) -> None:
    masks = panning.prune(lenet5, 0.99, "rl-panning", data=batch, seed=0)
    assert masks.kept() == round(0.01 * 430500)
    assert masks.metadata["collapsed_layers"] == []
    assert masks.metadata["effective_sparsity"] < 0.995
    assert load_agent()[1].command.startswith("panning agent train")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_cli_trains_an_agent_that_screens(data_root: Path, tmp_path: Path) -> None:
    agent = tmp_path / "agent.zip"
    common = ["--dataset", "mnist", "--val-size", "50"]
    code, out = invoke(
        "agent", "train", "--model", "lenet300", *common, "--timesteps", "24", "--iterations", "4",
        "--eval-every", "12", "--eval-targets", "0.9", "--checkpoint-every", "12", "--quiet", "--out", str(agent),
    )  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "agent-training" / "evaluations.npz").is_file()
    code, out = invoke("agent", "info", str(agent))
    assert code == 0 and "iterations: 4" in out and "models: ['lenet300']" in out
    masks = tmp_path / "m.safetensors"
    code, out = invoke(
        "prune", "--model", "lenet300", *common, "--method", "rl-panning", "--agent", str(agent),
        "--sparsity", "0.99", "--out", str(masks),
    )  # fmt: skip
    assert code == 0, out
    loaded = panning.masks.load(masks)
    assert loaded.kept() == round(0.01 * loaded.total()) and loaded.metadata["iterations"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--method", "panning", "--agent", "a.zip"], "--agent is not an option of --method panning (its"),
        (
            ["prune", "--method", "rl-panning", "--temperature", "2"],
            "--temperature is not an option of --method rl-panning",
        ),
        (
            ["prune", "--method", "erk", "--grasp", "abs"],
            "--grasp is not an option of --method erk (its options: none)",
        ),
        (
            ["prune", "--method", "erk", "-O", "seed=1"],
            "'seed' is a screening setting, not a method option: use --seed",
        ),
        (["prune", "--method", "rl-panning", "--agent", "nowhere.zip"], "no agent at nowhere.zip"),
        (["agent", "train", "--timesteps", "10", "--targets", "1.2"], "low <= high <= 1"),
        (["agent", "train", "--timesteps", "0"], "--timesteps must be positive"),
    ],
)
def test_cli_agent_mistakes_are_one_line_errors(data_root: Path, tmp_path: Path, args: list[str], message: str) -> None:
    extra = ["--sparsity", "0.9"] if args[0] == "prune" else []
    common = ["--model", "lenet300", "--dataset", "mnist", "--val-size", "50"]
    code, out = invoke(*args, *common, *extra, "--out", str(tmp_path / "x.zip"))
    assert code == 2 and message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_same_seed_same_agent(tmp_path: Path, tiny_data) -> None:
    def run(out: Path, seed: int) -> dict[str, torch.Tensor]:
        env = PanningEnv(small_net, tiny_data, targets=[(0.5, 0.9)], iterations=3, samples_per_class=2)
        options = {"learning_starts": 10, "batch_size": 8, "progress": False, "checkpoint_every": 100}
        return train_agent(env, 24, out, record(3), seed=seed, **options).policy.state_dict()

    first, second, other = run(tmp_path / "a.zip", 1), run(tmp_path / "b.zip", 1), run(tmp_path / "c.zip", 2)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_bad_training_settings_and_a_damaged_checkpoint_are_one_line_errors(tiny_data, tmp_path: Path) -> None:
    env = PanningEnv(small_net, tiny_data, targets=[(0.5, 0.9)], iterations=4, samples_per_class=2)
    out = tmp_path / "agent.zip"
    with pytest.raises(panning.UserError, match="--learning-starts must be at least 0 and below --timesteps"):
        train_agent(env, 40, out, record(4), learning_starts=40, progress=False)
    with pytest.raises(panning.UserError, match="--checkpoint-every must be a positive"):
        train_agent(env, 40, out, record(4), checkpoint_every=0, progress=False)
    assert not out.exists()
    train_agent(env, 40, out, record(4), learning_starts=10, batch_size=16, progress=False, checkpoint_every=20)
    buffers = sorted((tmp_path / "agent-training").glob("*replay_buffer*"))
    buffers[-1].write_bytes(buffers[-1].read_bytes()[:100])  # as a write interrupted half-way leaves it
    with pytest.raises(panning.UserError, match="cannot be read .*delete it and its replay buffer"):
        train_agent(env, 60, out, record(4), resume=True, progress=False)


def test_an_agent_used_with_another_episode_length_warns(trained: Path, tiny_data) -> None:
    with pytest.warns(UserWarning, match="trained on episodes of 4 steps, not 2"):
        panning.prune(small_net(), 0.85, "rl-panning", data=tiny_data, seed=0, iterations=2, agent=str(trained))


def test_an_agent_whose_record_lacks_a_setting_is_refused(trained: Path, tmp_path: Path) -> None:
    agent, _ = load_agent(trained)
    stored = dict(agent.panning_agent)
    del stored["iterations"]
    agent.panning_agent = stored
    damaged = tmp_path / "old.zip"
    agent.save(damaged)
    with pytest.raises(panning.UserError, match="training record lacks iterations"):
        load_agent(damaged)


def test_a_resumed_training_keeps_the_earlier_evaluations(tiny_data, tmp_path: Path) -> None:
    def env(cycle: bool) -> PanningEnv:
        return PanningEnv(
            small_net, tiny_data, targets=[(0.5, 0.9)], iterations=4, samples_per_class=2, cycle_targets=cycle
        )

    out = tmp_path / "agent.zip"
    settings = {"learning_starts": 10, "batch_size": 16, "progress": False, "checkpoint_every": 20, "eval_every": 20}
    train_agent(env(False), 40, out, record(4), eval_env=env(True), eval_episodes=1, **settings)
    out.unlink()
    train_agent(env(False), 60, out, record(4), eval_env=env(True), eval_episodes=1, resume=True, **settings)
    with np.load(tmp_path / "agent-training" / "evaluations.npz") as saved:
        assert saved["timesteps"].tolist() == [20, 40, 60]


def test_the_agent_says_so_on_data_it_was_not_trained_on(lenet5) -> None:
    images, labels = torch.rand(60, 1, 28, 28), torch.arange(60) % 10
    own = panning.data.from_tensors((images, labels), (images[:10], labels[:10]), val_size=10)
    with pytest.warns(UserWarning, match="the agent was trained on mnist .*, not custom"):
        panning.prune(lenet5, 0.9, "rl-panning", data=own, iterations=2)


def test_the_agent_says_so_on_a_model_it_was_not_trained_on(lenet5, batch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LeNet-5 on MNIST is one of the shipped agent's models: silence
        panning.prune(lenet5, 0.9, "rl-panning", data=batch, seed=0, iterations=20)
    own = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.warns(UserWarning, match=r"trained on lenet5, lenet300 \(mnist\); this Sequential's layers match none"):
        panning.prune(own, 0.9, "rl-panning", data=batch, seed=0, iterations=20)


def test_an_agent_trained_on_data_of_its_own_screens_any_model(batch) -> None:
    method = RLPanning()
    method.info.dataset = "custom"  # as recorded for an agent trained on from_tensors data
    own = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    masks = panning.prune(own, 0.9, method, data=batch, seed=0, iterations=20)
    assert masks.kept() == round(0.1 * masks.total())
