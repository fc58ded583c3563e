"""A few optimizer steps of a method outside the engine, shared by the method tests."""
import torch

from mixlab import engine
from mixlab.config import resolve
from mixlab.methods.base import StepProgress


def train_steps(method_name, overrides, n_steps=30, batch=64, seed=0):
    """A few optimizer steps of a method on random Fashion-MNIST batches, after the queue has been
    filled with real teacher keys (so the loss trend reflects learning, not the queue warming up).
    Returns the loss of every step."""
    cfg = resolve(method_name, "smoke", {"train": {"subset": 256, "seed": seed}, **overrides})
    setup = engine.build(cfg)
    method, aug, images = setup.method, setup.augmenter, setup.images
    opt = method.configure_optimizers(cfg.train)["main"]
    gen = torch.Generator().manual_seed(seed)
    method.train()
    losses = []
    warm = cfg.params.queue_size // batch
    for step in range(warm + n_steps):
        idx = torch.randperm(len(images), generator=gen)[:batch]
        views = [aug(images[idx], gen) for _ in range(method.n_views)]
        out = method.training_step(views, idx, "main")
        if step >= warm:
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            losses.append(float(out["loss"].detach()))
        method.after_step(StepProgress(step, warm + n_steps))
    return losses
