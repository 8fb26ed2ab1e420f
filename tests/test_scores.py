"""Every index against values worked out by hand (numpy, float64) on networks small enough."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import panning
from conftest import ConvBN, TinyConv, TwoLayerLinear
from panning.masks import Masks
from panning.screening import scores

W1 = np.array([[0.5, -1.0, 0.25], [1.5, 0.5, -0.75]])
W2 = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]])
X = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0]])
Y = np.array([0, 2])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _grads(w1: np.ndarray, w2: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the mean CE(W2 W1 x / T, y), written out by the chain rule."""
    h = X @ w1.T
    z = h @ w2.T / temperature
    delta = (_softmax(z) - np.eye(3)[Y]) / len(Y) / temperature
    return (delta @ w2).T @ X, delta.T @ h


def _net(w1: np.ndarray = W1, w2: np.ndarray = W2) -> TwoLayerLinear:
    return TwoLayerLinear(torch.tensor(w1, dtype=torch.float64), torch.tensor(w2, dtype=torch.float64)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(X), torch.tensor(Y)


def test_snip_equals_hand_computed_value() -> None:
    g1, g2 = _grads(W1, W2)
    out = scores.snip(_net(), *_batch())
    np.testing.assert_allclose(out["fc1.weight"].numpy(), np.abs(W1 * g1), rtol=1e-10)
    np.testing.assert_allclose(out["fc2.weight"].numpy(), np.abs(W2 * g2), rtol=1e-10)


def test_snip_on_a_masked_network_scores_pruned_weights_too() -> None:
    m1 = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    m2 = np.ones_like(W2, dtype=bool)
    g1, _ = _grads(W1 * m1, W2 * m2)
    masks = Masks({"fc1.weight": torch.tensor(m1), "fc2.weight": torch.tensor(m2)})
    out = scores.snip(_net(), *_batch(), masks=masks)
    np.testing.assert_allclose(out["fc1.weight"].numpy(), np.abs(W1 * g1), rtol=1e-10)
    assert float(out["fc1.weight"][0, 1]) > 0  # pruned, yet scored: regrowth is possible


def test_snip_temperature_variant() -> None:
    g1, _ = _grads(W1, W2, temperature=200.0)
    out = scores.snip(_net(), *_batch(), temperature=200.0)
    np.testing.assert_allclose(out["fc1.weight"].numpy(), np.abs(W1 * g1), rtol=1e-9)


def test_grasp_equals_theta_times_hessian_gradient_product() -> None:
    temperature = 200.0
    g1, g2 = _grads(W1, W2, temperature)
    eps = 1e-4
    # Hg by central differences of the hand-written gradient along g.
    p1, p2 = _grads(W1 + eps * g1, W2 + eps * g2, temperature)
    m1, m2 = _grads(W1 - eps * g1, W2 - eps * g2, temperature)
    hg1, hg2 = (p1 - m1) / (2 * eps), (p2 - m2) / (2 * eps)
    out = scores.grasp(_net(), *_batch())
    np.testing.assert_allclose(out["fc1.weight"].numpy(), W1 * hg1, rtol=1e-5, atol=1e-14)
    np.testing.assert_allclose(out["fc2.weight"].numpy(), W2 * hg2, rtol=1e-5, atol=1e-14)
    absolute = scores.grasp(_net(), *_batch(), absolute=True)
    np.testing.assert_allclose(absolute["fc2.weight"].numpy(), np.abs(W2 * hg2), rtol=1e-5, atol=1e-14)


def test_synflow_two_layer_linear() -> None:
    # R = 1ᵀ|W2||W1|1, so dR/dW1_ij = Σ_k |W2_ki| and dR/dW2_ki = Σ_j |W1_ij|.
    out = scores.synflow(_net(), input_shape=(3,))
    expected1 = np.abs(W1) * np.abs(W2).sum(axis=0)[:, None]
    expected2 = np.abs(W2) * np.abs(W1).sum(axis=1)[None, :]
    np.testing.assert_allclose(out["fc1.weight"].numpy(), expected1, rtol=1e-12)
    np.testing.assert_allclose(out["fc2.weight"].numpy(), expected2, rtol=1e-12)
    assert out["fc1.weight"].dtype == torch.float64


def test_synflow_with_mask_scores_pruned_weights_by_the_masked_paths() -> None:
    m2 = np.array([[1, 0], [1, 0], [0, 0]], dtype=bool)  # unit 1 of the hidden layer feeds nothing
    masks = {"fc2.weight": torch.tensor(m2)}
    out = scores.synflow(_net(), input_shape=(3,), masks=masks)
    expected1 = np.abs(W1) * np.abs(W2 * m2).sum(axis=0)[:, None]
    np.testing.assert_allclose(out["fc1.weight"].numpy(), expected1, rtol=1e-12)
    assert torch.all(out["fc1.weight"][1] == 0)
    # The masked layer's own pruned weights are scored with their original values (regrowth).
    expected2 = np.abs(W2) * np.abs(W1).sum(axis=1)[None, :]
    np.testing.assert_allclose(out["fc2.weight"].numpy(), expected2, rtol=1e-12)


def test_synflow_without_biases_counts_only_the_flow_from_the_input() -> None:
    # A hidden unit with no kept input: with biases its bias feeds it, so its outgoing weight
    # scores as if it were useful; without biases only paths from the input count.
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].bias.fill_(0.5)
    masks = {"0.weight": torch.tensor([[True, True], [False, False]])}
    with_biases = scores.synflow(net, input_shape=(2,), masks=masks)["2.weight"]
    without = scores.synflow(net, input_shape=(2,), masks=masks, biases=False)["2.weight"]
    assert with_biases[0, 1] > 0 and without[0, 1] == 0 and without[0, 0] > 0
    assert not net[0].bias.eq(0).any()  # the model keeps its biases


def test_the_biases_option_is_synflows_and_keeps_the_default_identity() -> None:
    assert panning.pruning.resolved_options("synflow", {}) == {"absolute": False, "temperature": None}
    assert panning.pruning.resolved_options("synflow", {"biases": False})["biases"] is False
    with pytest.raises(ValueError, match="the 'biases' option only applies to synflow, not snip"):
        panning.pruning.create_method("snip", biases=False)
    # An unknown option's message names only the options this index uses.
    with pytest.raises(ValueError, match="unknown option 'colour' for method 'random'; valid: none$"):
        panning.pruning.create_method("random", colour="red")
    assert panning.pruning.method_option_names("grasp") == ["temperature", "absolute"]
    assert panning.pruning.method_option_names("synflow") == ["biases"]
    # Panning's SynFlow term takes the same choice, named in its identity only when off.
    assert "synflow_biases" not in panning.pruning.resolved_options("panning", {})
    assert panning.pruning.resolved_options("panning", {"synflow_biases": False})["synflow_biases"] is False
    with pytest.raises(ValueError, match="synflow_biases must be true or false"):
        panning.pruning.create_method("panning", synflow_biases="no")


def test_grasp_on_a_masked_network_uses_the_original_weights() -> None:
    m1 = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)
    w1m = W1 * m1
    g1, g2 = _grads(w1m, W2, 200.0)
    eps = 1e-4
    p1, _ = _grads(w1m + eps * g1, W2 + eps * g2, 200.0)
    q1, _ = _grads(w1m - eps * g1, W2 - eps * g2, 200.0)
    out = scores.grasp(_net(), *_batch(), masks={"fc1.weight": torch.tensor(m1)})
    np.testing.assert_allclose(out["fc1.weight"].numpy(), W1 * (p1 - q1) / (2 * eps), rtol=1e-5, atol=1e-14)
    assert float(out["fc1.weight"][0, 1]) != 0  # pruned, still scored


def test_synflow_runs_normalisation_layers_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = ConvBN()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    in_train = scores.synflow(net, input_shape=(1, 6, 6))
    net.eval()
    in_eval = scores.synflow(net, input_shape=(1, 6, 6))
    for name in in_train:
        assert torch.equal(in_train[name], in_eval[name])


def test_a_prunable_layer_off_the_graph_scores_zero() -> None:
    class WithAuxiliaryHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(3, 2)
            self.auxiliary = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    net = WithAuxiliaryHead()
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    for out in (scores.snip(net, x, y), scores.grasp(net, x, y)):
        assert torch.all(out["auxiliary.weight"] == 0) and torch.any(out["body.weight"] != 0)


def test_indices_on_a_one_channel_conv_net() -> None:
    kernel = np.array([[0.5, -1.0], [2.0, 0.25]])
    readout = np.array([[1.0, -0.5, 0.25, 2.0], [-1.0, 0.5, 1.5, -0.25]])
    net = TinyConv(torch.tensor(kernel), torch.tensor(readout)).double()
    syn = scores.synflow(net, input_shape=(1, 3, 3))
    np.testing.assert_allclose(syn["conv.weight"].numpy().reshape(2, 2), np.abs(kernel) * np.abs(readout).sum())
    np.testing.assert_allclose(syn["fc.weight"].numpy(), np.abs(readout) * np.abs(kernel).sum())

    image = np.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0], [2.0, -2.0, 1.0]])
    conv = np.array([[(kernel * image[i : i + 2, j : j + 2]).sum() for j in range(2)] for i in range(2)]).reshape(4)
    z = readout @ conv
    delta = _softmax(z[None])[0] - np.array([0.0, 1.0])  # target class 1, batch of one
    grad_readout = np.outer(delta, conv)
    grad_map = (readout.T @ delta).reshape(2, 2)
    grad_kernel = sum(grad_map[i, j] * image[i : i + 2, j : j + 2] for i in range(2) for j in range(2))
    out = scores.snip(net, torch.tensor(image).view(1, 1, 3, 3), torch.tensor([1]))
    np.testing.assert_allclose(out["conv.weight"].numpy().reshape(2, 2), np.abs(kernel * grad_kernel), rtol=1e-10)
    np.testing.assert_allclose(out["fc.weight"].numpy(), np.abs(readout * grad_readout), rtol=1e-10)


def test_magnitude_and_random() -> None:
    np.testing.assert_allclose(scores.magnitude(_net())["fc1.weight"].numpy(), np.abs(W1))
    a = scores.random(_net(), torch.Generator().manual_seed(5))
    b = scores.random(_net(), torch.Generator().manual_seed(5))
    c = scores.random(_net(), torch.Generator().manual_seed(6))
    assert torch.equal(a["fc2.weight"], b["fc2.weight"]) and not torch.equal(a["fc2.weight"], c["fc2.weight"])


@pytest.mark.parametrize("index", ["snip", "grasp", "synflow", "magnitude", "random"])
def test_indices_leave_the_model_as_they_found_it(index: str) -> None:
    torch.manual_seed(0)
    net = ConvBN()
    net.head.eval()  # a mixed train/eval state must survive; batch norm stays in train mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    assert not all(modes) and any(modes)
    x, y = torch.randn(12, 1, 6, 6), torch.arange(12) % 3
    call = {
        "snip": lambda: scores.snip(net, x, y),
        "grasp": lambda: scores.grasp(net, x, y),
        "synflow": lambda: scores.synflow(net, x),
        "magnitude": lambda: scores.magnitude(net),
        "random": lambda: scores.random(net, torch.Generator().manual_seed(0)),
    }[index]
    out = call()
    assert set(out) == {"conv.weight", "head.1.weight", "head.3.weight"}
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [m.training for m in net.modules()] == modes
    assert all(p.grad is None for p in net.parameters())


def test_data_driven_errors_are_clear() -> None:
    net = ConvBN(classes=3)
    x = torch.randn(4, 1, 6, 6)
    with pytest.raises(ValueError, match="class 5 but the model has 3 outputs"):
        scores.snip(net, x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="data-driven"):
        scores.grasp(net)
    with pytest.raises(ValueError, match="NaN or Inf"):
        scores.snip(net, torch.full_like(x, float("nan")), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError):
        scores.snip(net, x, torch.tensor([0.0, 1.0, 2.0, 0.0]))


def test_scoring_a_model_with_applied_masks_is_refused() -> None:
    net = _net()
    panning.masks.apply(net, Masks.ones_like(net))
    with pytest.raises(ValueError, match="masks are applied"):
        scores.synflow(net, input_shape=(3,))


class _FirstConvNet(nn.Module):
    """A strided, dilated, grouped first convolution with a bias, then a 'same'-padded one."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.second = nn.Conv2d(6, 5, 3, padding="same")
        self.head = nn.Linear(5 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))).flatten(1))


def test_grasp_skips_the_data_inputs_gradient_without_changing_a_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = _FirstConvNet()
    x, y = torch.randn(6, 4, 7, 7), torch.tensor([0, 1, 2, 0, 1, 2])
    masks = Masks({n: torch.rand(p.shape) > 0.3 for n, p in net.named_parameters() if n.endswith("weight")})
    routed_inputs = []
    apply = scores._DataConv2d.apply
    monkeypatch.setattr(scores._DataConv2d, "apply", lambda x, *rest: routed_inputs.append(x.shape) or apply(x, *rest))
    routed = scores.loss_aware_scores(net, x, y, masks, 200.0)
    assert routed_inputs == [x.shape]  # the first convolution only: the second's input needs a gradient
    monkeypatch.setattr(scores, "_DataConvolutions", contextlib.nullcontext)
    plain = scores.loss_aware_scores(net, x, y, masks, 200.0)
    for name in plain.grasp:
        assert torch.equal(routed.grasp[name], plain.grasp[name]), name
        assert torch.equal(routed.snip[name], plain.snip[name]), name


def test_the_data_convolution_has_pytorchs_second_derivatives_for_weight_and_bias() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 4, 3, 3, dtype=torch.float64)

    def hessian_vector_products(convolve: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, ...]:
        loss = ((torch.tanh(convolve()) - target) ** 2).sum()
        grads = torch.autograd.grad(loss, (weight, bias), create_graph=True)
        return torch.autograd.grad(grads, (weight, bias), grad_outputs=[g.detach() for g in grads])

    ours = hessian_vector_products(lambda: scores._DataConv2d.apply(x, weight, bias, [2, 2], [1, 1], [1, 1], 1))
    pytorchs = hessian_vector_products(lambda: nn.functional.conv2d(x, weight, bias, stride=2, padding=1))
    for mine, reference in zip(ours, pytorchs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def test_synflow_reuses_its_float64_magnitudes_only_while_the_weights_are_unchanged() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    cache: dict = {}
    first = scores.synflow(net, input_shape=(4,), cache=cache)
    assert len(cache) == 1
    entry = next(iter(cache.values()))
    again = scores.synflow(net, input_shape=(4,), cache=cache)
    assert next(iter(cache.values())) is entry  # reused, not recomputed
    assert all(torch.equal(first[n], again[n]) for n in first)
    with torch.no_grad():
        net[0].weight.mul_(-3.0)  # an in-place change moves the version counter: the entry is stale
    changed = scores.synflow(net, input_shape=(4,), cache=cache)
    fresh = scores.synflow(net, input_shape=(4,))
    assert all(torch.equal(changed[n], fresh[n]) for n in fresh)
    assert not torch.equal(changed["0.weight"], first["0.weight"])


def test_grasp_takes_the_double_backward_of_attention() -> None:
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 16)
            self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.layer(self.embed(x)).mean(1))

    torch.manual_seed(0)
    net = Encoder()
    x, y = torch.randn(8, 5, 8), torch.arange(8) % 4
    scores = panning.scores.loss_aware_scores(net, x, y, temperature=200.0)
    assert scores.grasp is not None and all(bool(s.isfinite().all()) for s in scores.grasp.values())
    assert any(bool(s.any()) for s in scores.grasp.values())
