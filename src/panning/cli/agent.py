"""The panning agent: ``agent train`` and ``agent info``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click
import torch

from panning import agent as agentlib
from panning import data as datasets
from panning import models
from panning.agent import TRAINING_DEFAULTS as AGENT_DEFAULTS
from panning.cli.base import architecture, cli, user_errors
from panning.errors import UserError
from panning.io import recorded_command
from panning.training import (
    resolve_device,
)


def _agent_option(name: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An integer option of agent training whose default is the library's (TRAINING_DEFAULTS)."""
    flag = f"--{name.replace('_', '-')}"
    return click.option(flag, default=AGENT_DEFAULTS[name], show_default=True, type=int, help=help)


@cli.group("agent", cls=click.Group)
def agent_group() -> None:
    """Train and inspect the panning agent (reinforcement learning over the index weights)."""


@agent_group.command("train")
@click.option(
    "--model",
    "model_names",
    required=True,
    help="Model name, or several separated by commas (episodes take turns): e.g. lenet5,lenet300.",
)
@click.option("--dataset", required=True, type=click.Choice(datasets.names()), help="Dataset name.")
@click.option("--timesteps", required=True, type=int, help="Environment steps (pruning steps) to train for.")
@click.option(
    "--targets",
    default="0.8:1.0",
    show_default=True,
    help="Target sparsity ranges LOW:HIGH drawn per episode; several separated by commas take equal turns.",
)
@_agent_option("iterations", "Pruning steps T per episode.")
@click.option(
    "--samples-per-class", default=2, show_default=True, type=int, help="Examples per class in each scoring batch."
)
@_agent_option("seed", "Seed of TD3, the episodes and the data.")
@click.option(
    "--learning-starts", type=int, help="Random steps before learning (default: 2000, at most a quarter of the run)."
)
@_agent_option("eval_every", "Steps between evaluations (0: none).")
@click.option(
    "--eval-targets",
    default="0.99,0.995,0.998,0.999",
    show_default=True,
    help="Target sparsities of the deterministic evaluation episodes, one episode each.",
)
@_agent_option("checkpoint_every", "Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint beside --out.")
@click.option("--tensorboard", type=click.Path(file_okay=False), help="Write TensorBoard logs to this folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding <dataset>/ folders.")
@click.option("--device", default="cpu", show_default=True, help="Device of the screened models: auto, cpu or cuda.")
@click.option(
    "--val-size", default=datasets.DEFAULT_VAL_SIZE, show_default=True, type=int, help="Training examples held out."
)
@click.option(
    "--normalization",
    default=datasets.Dataset.normalization,
    show_default=True,
    type=click.Choice(list(datasets.INPUT_NORMALIZATIONS)),
    help="Inputs.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Agent file to write (.zip).")
@user_errors
def agent_train_command(
    model_names: str,
    dataset: str,
    timesteps: int,
    targets: str,
    iterations: int,
    samples_per_class: int,
    seed: int,
    learning_starts: int | None,
    eval_every: int,
    eval_targets: str,
    checkpoint_every: int,
    resume: bool,
    tensorboard: str | None,
    data_dir: str | None,
    device: str,
    val_size: int,
    normalization: datasets.InputNormalization,
    quiet: bool,
    out: str,
) -> None:
    """Train a TD3 agent that weighs SynFlow, SNIP and GraSP at every pruning step."""
    names = [name.strip() for name in model_names.split(",") if name.strip()]
    unknown = [name for name in names if name not in models.names()]
    if not names or unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown) or model_names!r}; valid: {', '.join(models.names())}")
    if timesteps < 1:
        raise UserError(f"--timesteps must be positive, got {timesteps}")
    ranges = agentlib.parse_targets(targets)
    evaluation = agentlib.parse_targets(eval_targets)
    target_device = resolve_device(device)
    data = datasets.load(dataset, data_dir, val_size=val_size, normalization=normalization)

    def factory(name: str) -> Callable[[], torch.nn.Module]:
        return lambda: architecture(name, dataset)[0].to(target_device)

    def environment(target_ranges: Any, cycle: bool) -> agentlib.PanningEnv:
        return agentlib.PanningEnv(
            [factory(name) for name in names],
            data,
            targets=target_ranges,
            iterations=iterations,
            samples_per_class=samples_per_class,
            cycle_targets=cycle,
        )

    train_env = environment(ranges, False)
    record = agentlib.AgentInfo(
        iterations=iterations,
        targets=[list(r) for r in ranges],
        models=names,
        dataset=dataset,
        samples_per_class=samples_per_class,
        normalization=train_env.normalization,
        combination=train_env.combination,
        temperature=train_env.temperature,
        timesteps=timesteps,
        seed=seed,
        command=recorded_command("panning", sys.argv[1:]),
        input_normalization=normalization,
        val_size=val_size,
    )
    agentlib.train_agent(
        train_env,
        timesteps,
        out,
        record,
        eval_env=environment(evaluation, True) if eval_every > 0 else None,
        seed=seed,
        learning_starts=learning_starts,
        eval_every=eval_every,
        eval_episodes=len(evaluation) * len(names),  # every model at every evaluation target
        checkpoint_every=checkpoint_every,
        resume=resume,
        tensorboard=tensorboard,
        progress=not quiet,
    )
    click.echo(f"wrote {out} (checkpoints and evaluations in {agentlib.checkpoint_dir(out)})")


@agent_group.command("info")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@user_errors
def agent_info_command(file: str | None) -> None:
    """Show how an agent was trained (without FILE: the shipped agent)."""
    _, info = agentlib.load_agent(file)
    for key, value in asdict(info).items():
        click.echo(f"{key}: {value}")
