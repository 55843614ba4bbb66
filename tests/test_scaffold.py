"""SCAFFOLD against numbers worked out by hand: a toy client's corrected step and option-II variate,
and the server's modality-aware update of the weights and of ``c`` over two rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmosaic.algorithms.scaffold import ScaffoldClient, ScaffoldConfig, ScaffoldServer
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.algorithm import ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec, Modality
from fedmosaic.core.seeding import Rng
from fedmosaic.core.settings import ModelConfig, TrainingConfig
from fedmosaic.core.task import ClientData, TaskInfo, View
from fedmosaic.models.params import to_arrays

INFO = TaskInfo("toy", (Modality("a", "embedding", (2,)), Modality("b", "embedding", (2,))), 2, ("x", "y"))


def _settings(**training: float) -> Settings:
    cfg = TrainingConfig(optimizer="sgd", lr=0.1, momentum=0.0, batch_size=2, local_epochs=1, **training)
    return Settings(INFO, ScaffoldConfig(server_lr=0.5), cfg, ModelConfig(embed_dim=2), 0, 2, 3)


# --------------------------------------------------------------------------- the client


class _Bias(nn.Module):
    """Logits = ``head.b`` for every sample: the cross-entropy gradient is softmax(b) - mean onehot."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Module()
        self.head.b = nn.Parameter(torch.zeros(2))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head.b.expand(len(inputs["a"]), 2)


def _client_data() -> ClientData:
    # two samples of class 0, one batch: one SGD step per round (K = 1)
    store = {"a": np.zeros((2, 2), np.float32), "b": np.zeros((2, 2), np.float32)}
    mask = np.array([[True, False], [True, False]])
    view = View(INFO, store, np.array([0, 0]), np.arange(2), mask)
    return ClientData(ClientSpec("A", frozenset({"a"}), 2), view, view, view)


def _client() -> ScaffoldClient:
    client = ScaffoldClient(_settings())
    client.slot._model = _Bias()  # the client only sees named arrays: a toy model keeps them few
    client.slot._initial = to_arrays(client.slot._model)
    return client


def test_scaffold_client_step_and_option_ii_by_hand() -> None:
    client, data = _client(), _client_data()
    zero = np.zeros(2, np.float32)
    # Round 1: x = [0, 0], c = [0.2, -0.2], c_i = 0 (empty state). g = softmax(0) - [1, 0] = [-0.5, 0.5];
    # step g - c_i + c = [-0.3, 0.3]; y = x - 0.1 [-0.3, 0.3] = [0.03, -0.03];
    # c_i+ = c_i - c + (x - y) / (K lr) = [-0.2, 0.2] + [-0.3, 0.3] = [-0.5, 0.5] (= g: one step);
    # dc = c_i+ - c_i = [-0.5, 0.5].
    sent = Message({"head.b": zero, "c/head.b": np.array([0.2, -0.2], np.float32)})
    reply, state = client.fit(sent, Message(), data, Rng(0, 1, "A"))
    np.testing.assert_allclose(reply.arrays["head.b"], [0.03, -0.03], rtol=1e-5)
    np.testing.assert_allclose(reply.arrays["dc/head.b"], [-0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(state.arrays["c/head.b"], [-0.5, 0.5], rtol=1e-5)
    assert set(reply.arrays) == {"head.b", "dc/head.b"} and reply.meta["n_train"] == 2

    # Round 2 from x = [0, 0] again, c = [0.1, -0.1], c_i = [-0.5, 0.5] from the state: the corrected
    # step g - c_i + c = [0.1, -0.1] follows c, not the local gradient; y = [-0.01, 0.01];
    # c_i+ = [-0.5, 0.5] - [0.1, -0.1] + [0.1, -0.1] = [-0.5, 0.5]: dc = 0.
    sent = Message({"head.b": zero, "c/head.b": np.array([0.1, -0.1], np.float32)})
    reply, state = client.fit(sent, state, data, Rng(0, 2, "A"))
    np.testing.assert_allclose(reply.arrays["head.b"], [-0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose(reply.arrays["dc/head.b"], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(state.arrays["c/head.b"], [-0.5, 0.5], rtol=1e-5)


# --------------------------------------------------------------------------- the server


class _Toy(nn.Module):
    """An encoder per modality, a head and a buffer in it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({"a": nn.Module(), "b": nn.Module()})
        self.encoders["a"].w = nn.Parameter(torch.tensor([1.0]))
        self.encoders["b"].w = nn.Parameter(torch.tensor([2.0]))
        self.head = nn.Module()
        self.head.w = nn.Parameter(torch.tensor([0.0, 4.0]))
        self.head.register_buffer("count", torch.tensor([0.0]))


CLIENTS = [
    ClientSpec("A", frozenset({"a"}), 1),
    ClientSpec("B", frozenset({"b"}), 1),
    ClientSpec("C", frozenset({"a", "b"}), 3),
]


def _server() -> ScaffoldServer:
    server = ScaffoldServer(_settings(), ServerData(None, None, None))  # type: ignore[arg-type]
    server.model = _Toy()
    return server


def _reply_a() -> Message:
    arrays = {"encoders.a.w": [3.0], "head.w": [4.0, 0.0], "head.count": [2.0]}
    arrays |= {"dc/encoders.a.w": [0.4], "dc/head.w": [1.0, -2.0]}
    return Message({n: np.array(v, np.float32) for n, v in arrays.items()}, {"n_train": 1, "train_loss": 1.0})


def _reply_c() -> Message:
    arrays = {"encoders.a.w": [-1.0], "encoders.b.w": [6.0], "head.w": [0.0, 8.0], "head.count": [6.0]}
    arrays |= {"dc/encoders.a.w": [0.2], "dc/encoders.b.w": [0.6], "dc/head.w": [-3.0, 0.5]}
    return Message({n: np.array(v, np.float32) for n, v in arrays.items()}, {"n_train": 3, "train_loss": 2.0})


def _weights(server: ScaffoldServer) -> dict[str, np.ndarray]:
    return to_arrays(server.model)


def test_scaffold_server_by_hand() -> None:
    server = _server()
    sent = server.configure(1, CLIENTS, Rng(0, 1, "server"))  # 3 per round: everyone
    assert set(sent["A"].arrays) == {"encoders.a.w", "head.w", "head.count", "c/encoders.a.w", "c/head.w"}
    assert not sent["A"].arrays["c/head.w"].any()  # c starts at zero
    spec = server.reply_spec(1, "A", sent["A"])
    assert set(spec.arrays) == {"encoders.a.w", "head.w", "head.count", "dc/encoders.a.w", "dc/head.w"}

    # Round 1, A (n=1) and C (n=3) reply, B does not. N: a held by A, C (2); b by B, C (2); head by 3.
    #   a: avg (3 - 3) / 4 = 0, x = 1 + 0.5 (0 - 1) = 0.5;   c_a = (0.4 + 0.2) / 2 = 0.3
    #   b: avg 6 (C only),  x = 2 + 0.5 (6 - 2) = 4;         c_b = 0.6 / 2 = 0.3
    #   head: avg ([4, 0] + 3 [0, 8]) / 4 = [1, 6], x = [0, 4] + 0.5 [1, 2] = [0.5, 5]
    #         c_head = ([1, -2] + [-3, 0.5]) / 3 = [-2/3, -1/2];  count: the plain average 5
    train = server.aggregate(1, {"A": _reply_a(), "C": _reply_c()}, Rng(0, 1, "server"))
    assert train == {"train_loss": pytest.approx(1.75)}
    w = _weights(server)
    np.testing.assert_allclose(w["encoders.a.w"], [0.5])
    np.testing.assert_allclose(w["encoders.b.w"], [4.0])
    np.testing.assert_allclose(w["head.w"], [0.5, 5.0])
    np.testing.assert_allclose(w["head.count"], [5.0])
    assert "head.count" not in server.c  # a buffer has no variate
    np.testing.assert_allclose(server.c["encoders.a.w"], [0.3], rtol=1e-6)
    np.testing.assert_allclose(server.c["encoders.b.w"], [0.3], rtol=1e-6)
    np.testing.assert_allclose(server.c["head.w"], [-2 / 3, -0.5], rtol=1e-6)
    checkpoint = server.state()

    # Round 2, only A replies: b keeps its weight and its variate.
    #   a: x = 0.5 + 0.5 (3 - 0.5) = 1.75;  c_a = 0.3 + 0.4 / 2 = 0.5
    #   head: x = [0.5, 5] + 0.5 ([4, 0] - [0.5, 5]) = [2.25, 2.5]
    #         c_head = [-2/3, -1/2] + [1, -2] / 3 = [-1/3, -7/6]
    server.configure(2, CLIENTS, Rng(0, 2, "server"))
    server.aggregate(2, {"A": _reply_a()}, Rng(0, 2, "server"))
    w = _weights(server)
    np.testing.assert_allclose(w["encoders.a.w"], [1.75])
    np.testing.assert_allclose(w["encoders.b.w"], [4.0])
    np.testing.assert_allclose(w["head.w"], [2.25, 2.5])
    np.testing.assert_allclose(server.c["encoders.a.w"], [0.5], rtol=1e-6)
    np.testing.assert_allclose(server.c["encoders.b.w"], [0.3], rtol=1e-6)
    np.testing.assert_allclose(server.c["head.w"], [-1 / 3, -7 / 6], rtol=1e-6)

    resumed = _server()  # from round 1's checkpoint, without configure: the holder counts are in it
    resumed.load_state(checkpoint)
    resumed.aggregate(2, {"A": _reply_a()}, Rng(0, 2, "server"))
    assert all(np.array_equal(a, _weights(server)[n]) for n, a in _weights(resumed).items())
    assert all(np.array_equal(resumed.c[n], server.c[n]) for n in server.c)


def test_scaffold_config_bounds() -> None:
    with pytest.raises(ConfigError, match=r"^algorithm\.server_lr: "):
        load_config(None, ["algorithm.name=scaffold", "algorithm.server_lr=0"])
