"""MoCo + spherical k-means, and the momentum pieces shared with MiCE (EMA teacher, FIFO queue)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training import train_steps

from mixlab import engine
from mixlab.config import resolve
from mixlab.methods.base import DataSpec, EpochContext
from mixlab.methods.moco import MoCo
from mixlab.methods.momentum import Queue, ema_update_, make_teacher
from mixlab.mixture.contrastive import info_nce

pytestmark = pytest.mark.usefixtures("one_thread")


def test_queue_is_fifo_and_wraps():
    torch.manual_seed(0)
    q = Queue(5, (2,), normalize=False)
    assert q.data.shape == (5, 2) and int(q.ptr) == 0
    items = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    q.push(items[:3])
    assert int(q.ptr) == 3 and torch.equal(q.data[:3], items[:3])
    q.push(items[3:6])                       # wraps: slots 3, 4, then 0
    assert int(q.ptr) == 1
    assert torch.equal(q.data, torch.stack([items[5], items[1], items[2], items[3], items[4]]))
    q.push(items[:7])                        # longer than the queue: only the newest 5 survive
    assert int(q.ptr) == (1 + 7) % 5
    # as if pushed one by one: item j lands in slot (1 + j) % 5
    expected = torch.empty(5, 2)
    for j in range(7):
        expected[(1 + j) % 5] = items[j]
    assert torch.equal(q.data, expected)
    # the contents are the 5 most recent, oldest first from the pointer
    order = torch.cat([q.data[int(q.ptr):], q.data[:int(q.ptr)]])
    assert torch.equal(order, items[2:7])


def test_queue_state_dict_round_trip_and_unit_init():
    torch.manual_seed(0)
    q = Queue(7, (3, 4))
    torch.testing.assert_close(q.data.norm(dim=-1), torch.ones(7, 3))
    q.push(torch.randn(4, 3, 4))
    r = Queue(7, (3, 4))
    r.load_state_dict(q.state_dict())
    assert int(r.ptr) == 4 and torch.equal(r.data, q.data)
    assert set(q.state_dict()) == {"data", "ptr"}


def test_ema_update_and_frozen_teacher():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update_(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    ema_update_(teacher, student, 0.0)       # m = 0 copies the student
    for t, s in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, s)


def test_info_nce_matches_cross_entropy_form():
    gen = torch.Generator().manual_seed(0)
    f, v, q = (F.normalize(torch.randn(n, 6, generator=gen), dim=-1) for n in (4, 4, 9))
    logits = torch.cat([(f * v).sum(1, keepdim=True), f @ q.T], 1) / 0.2
    torch.testing.assert_close(-info_nce(f, v, q, 0.2), F.cross_entropy(logits, torch.zeros(4, dtype=torch.long),
                                                                       reduction="none"))


def test_predict_is_nearest_centroid_one_hot_or_soft():
    torch.manual_seed(0)
    spec = DataSpec(in_channels=1, image_size=28, n_samples=512, backbone="small-cnn")
    m = MoCo(resolve("moco", "smoke").params, spec).eval()
    x = torch.rand(64, 1, 28, 28)
    post = m.predict(x)                      # before any end_epoch: clusters the batch itself
    assert post.shape == (64, 10) and torch.equal(post.sum(1), torch.ones(64))
    ctx = EpochContext(epoch=1, map_dataset=lambda fn: fn(x), all_reduce=lambda t: t, log=print)
    logs = m.end_epoch(ctx)
    assert bool(m.has_centroids) and "kmeans_obj" in logs
    v = m.embed(x)
    post = m.predict(x)
    assert torch.equal(post.argmax(1), (v @ m.centroids.T).argmax(1))
    assert set(post.unique().tolist()) <= {0.0, 1.0}
    m.cfg.soft_temperature = 0.1
    soft = m.predict(x)
    torch.testing.assert_close(soft.sum(1), torch.ones(64))
    assert torch.equal(soft.argmax(1), post.argmax(1))


def test_training_lowers_the_loss_on_fashion_mnist():
    losses = train_steps("moco", {"method": {"queue_size": 128}})
    assert all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.05, losses


def test_smoke_run_clusters_and_checkpoints_queue(tmp_path):
    cfg = resolve("moco", "smoke", {"train": {"num_threads": 1}, "method": {"queue_size": 320}})
    engine.train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and "kmeans_obj" in r for r in rows)
    post = np.load(tmp_path / "run" / "predictions.npz")["posterior"].astype(np.float64)
    assert post.shape == (512, 10)
    np.testing.assert_allclose(post.sum(1), 1.0)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]
    steps = 512 // cfg.train.batch_size
    assert int(state["queue.ptr"]) == (cfg.train.epochs * steps * cfg.train.batch_size) % 320
    assert bool(state["has_centroids"])
    setup = engine.build(cfg)
    setup.method.load_state_dict(state)
    assert torch.equal(setup.method.queue.ptr, state["queue.ptr"])
    assert torch.equal(setup.method.centroids, state["centroids"])


def test_moco_runs_with_mices_settings():
    # MiCE App. D: the MoCo baseline "follows the same hyper-parameter settings as MiCE"
    for profile in ("smoke", "cpu", "gpu", "paper"):
        mice, moco = resolve("mice", profile), resolve("moco", profile)
        for field in ("lr", "batch_size", "epochs", "schedule", "milestones", "augment", "weight_decay",
                      "momentum", "image_size", "subset", "warmup_epochs"):
            assert getattr(moco.train, field) == getattr(mice.train, field), (profile, field)
        for field in ("tau", "queue_size", "teacher_momentum", "embed_dim", "n_clusters"):
            assert getattr(moco.params, field) == getattr(mice.params, field), (profile, field)


def test_spherical_kmeans_keeps_the_best_of_several_restarts():
    # one k-means restart often lands two centroids in one group; restarts (faiss nredo) keep the
    # best k-means objective, which needs no labels
    from mixlab.mixture.vmf import vmf_sample

    mus = np.random.default_rng(0).standard_normal((10, 4))  # 10 overlapping groups of unequal size
    x = np.concatenate([vmf_sample(mus[k], 30.0, 60 * (k + 1), seed=k) for k in range(10)])
    emb = torch.as_tensor(x).float()
    spec = DataSpec(in_channels=1, image_size=28, n_samples=len(x), backbone="small-cnn")
    assert resolve("moco", "smoke").params.kmeans_redo >= 5
    objs = {}
    for redo in (1, 5):
        m = MoCo(resolve("moco", "smoke", {"method": {"kmeans_redo": redo, "embed_dim": 4}}).params, spec)
        m.embed = lambda x_: emb
        objs[redo] = [m.end_epoch(EpochContext(epoch=e, map_dataset=lambda fn: fn(None),
                                                all_reduce=lambda t: t, log=print))["kmeans_obj"]
                      for e in range(8)]
    assert all(b >= a - 1e-6 for a, b in zip(objs[1], objs[5]))
    assert sum(b > a + 1e-4 for a, b in zip(objs[1], objs[5])) >= 2, objs
    assert np.mean(objs[5]) > np.mean(objs[1])
