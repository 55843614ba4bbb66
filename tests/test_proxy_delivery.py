"""The proxy set is shipped once, and again to a client that may have lost it (a restarted node)."""

from __future__ import annotations

import json
from pathlib import Path

from fedmosaic.algorithms import gvf
from fedmosaic.algorithms.proxy_delivery import ProxyDelivery
from fedmosaic.config import RunConfig, load_config, with_overrides
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.protocol import settings_from_config
from mhealth_files import mhealth_overrides, write_mhealth

LOSER = "client_7"  # an image+text client of the default mix


def test_delivery_once_and_again_after_a_missing_reply() -> None:
    d = ProxyDelivery()
    d.planned(["a", "b"])
    assert d.needs("a") and d.needs("b")
    d.replied(["a"])  # b planned, no valid reply: it may have lost the proxy
    d.planned(["a", "b"])
    assert not d.needs("a") and d.needs("b")
    d.replied(["a", "b"])
    restored = ProxyDelivery()
    restored.load_meta(Message(meta=d.to_meta("delivered")), "delivered")
    assert restored.holders == {"a", "b"} and not restored.needs("b")
    assert ProxyDelivery().needs("x")  # a state without the keys: nobody holds it yet

    skipped = ProxyDelivery()  # a round skipped below min_clients never reaches aggregate
    skipped.planned(["a"])
    assert skipped.needs("a")
    skipped.planned(["a"])  # whether a replied is unknown: send again
    assert skipped.needs("a")


def test_a_gvf_client_that_lost_its_state_gets_the_proxy_again(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = with_overrides(tiny_cfg, ["algorithm.name=gvf", "algorithm.dim=16", "rounds=3"])
    cfg.task.proxy_size = cfg.task.labelled_size = 24
    sent: dict[int, Message] = {}

    class Forgetful:
        """The client half, except that LOSER's node restarts before round 2."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def fit(self, message, state, data, rng):
            if data.spec.id == LOSER:
                sent[int(message.meta["round"])] = message
                if message.meta["round"] == 2:  # the node restarted: its state (and proxy copy) is gone
                    state = Message()
            return self.inner.fit(message, state, data, rng)

        def evaluate(self, message, state, data):
            return self.inner.evaluate(message, state, data)

    Federation.from_config(cfg, build_task(cfg), folder=tmp_path, client_wrappers=[Forgetful]).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    def has_proxy(m: Message) -> bool:
        return any(k.startswith(gvf.PROXY) for k in m.arrays)

    assert has_proxy(sent[1]) and not has_proxy(sent[2])
    assert "'vec/" in rows[1]["rejected"][LOSER]  # round 2: no proxy, no proxy vectors: rejected
    assert has_proxy(sent[3])  # so round 3 ships the proxy again ...
    assert "rejected" not in rows[2]  # ... and the client is back


def test_fedmekt_server_resends_the_proxy_windows_to_a_silent_client(tmp_path: Path, monkeypatch) -> None:
    from fedmosaic.algorithms import fedmekt

    cfg = load_config(
        None,
        [
            *mhealth_overrides(write_mhealth(tmp_path / "mh")),
            "algorithm.name=fedmekt",
            "algorithm.proxy_batch=12",
            "algorithm.server_epochs=2",  # not the default 40: the same code path, fewer server steps
        ],
    )
    task = build_task(cfg)

    def fresh(state: Message | None = None) -> fedmekt.FedMEKTServer:
        server = fedmekt.FedMEKTServer(
            settings_from_config(cfg, task.info, len(task.specs)),
            ServerData(task.proxy, task.labelled, task.test),
        )
        if state is not None:  # the file pipeline reloads the server between its steps
            server.load_state(state)
        monkeypatch.setattr(server, "_distil", lambda averaged, rng: (0.0, 0.0))  # bookkeeping only
        return server

    def proxy_receivers(plan: dict[str, Message]) -> set[str]:
        return {c for c, m in plan.items() if any(k.startswith("proxy/") for k in m.arrays)}

    server = fresh()
    plan = server.configure(1, task.specs, Rng(0, 1, SERVER))
    assert proxy_receivers(plan) == set(plan)
    silent = sorted(plan)[0]
    meta = {"n_train": 10, "train_loss": 1.0}
    replies = {  # every other client answers (echoing the global embeddings is a valid reply)
        c: Message({k: v for k, v in m.arrays.items() if not k.startswith("proxy/")}, meta)
        for c, m in plan.items()
        if c != silent
    }
    server = fresh(server.state())  # saved after configure, reloaded to aggregate
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    server = fresh(server.state())  # and again to plan round 2
    assert proxy_receivers(server.configure(2, task.specs, Rng(0, 2, SERVER))) == {silent}
