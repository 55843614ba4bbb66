"""Task assembly at scale: clients of one modality group share one view of the test set."""

from __future__ import annotations

import numpy as np

from fedmosaic.config import RunConfig, load_config
from fedmosaic.data.tasks import build_task


def test_clients_of_one_group_share_one_test_view(tiny_cfg: RunConfig) -> None:
    task = build_task(tiny_cfg)  # 2 image, 2 text, 6 image+text clients
    by_group: dict[str, list] = {}
    for c in task.clients:
        by_group.setdefault(c.spec.group, []).append(c.test)
    assert sorted(by_group) == ["image", "image+text", "text"]
    for group, views in by_group.items():
        assert all(v is views[0] for v in views), f"group {group} holds copies of the test view"
    distinct = {id(c.test) for c in task.clients}
    assert len(distinct) == 3  # one per group, not one per client


def test_shared_test_view_is_the_test_set_through_the_group_modalities(tiny_cfg: RunConfig) -> None:
    task = build_task(tiny_cfg)
    names = task.info.modality_names
    for c in task.clients:
        expected = task.test.restrict(c.spec.modalities)
        np.testing.assert_array_equal(c.test.indices, expected.indices)
        np.testing.assert_array_equal(c.test.mask, expected.mask)
        held = np.array([n in c.spec.modalities for n in names])
        assert not c.test.mask[:, ~held].any()  # nothing outside the client's modalities


def test_a_thousand_clients_hold_few_test_views() -> None:
    cfg = load_config(
        None,
        [
            "task.options.n_samples=3200",
            "task.options.image_size=12",
            "task.proxy_size=0",
            "task.labelled_size=0",
            "task.val_fraction=0",
            'clients.mix="image:300,text:300,image+text:400"',
            "compare=[]",
        ],
    )
    task = build_task(cfg)
    assert len(task.clients) == 1000
    assert len({id(c.test) for c in task.clients}) == 3
