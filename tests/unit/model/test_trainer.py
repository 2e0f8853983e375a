import numpy as np
import torch

from model.config import make_config
from model.trainer import Trainer


def _images(n=12, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def _cfg():
    return make_config("line", image_size=64, channels=1,
                       train={"batch_size": 4, "val_every_steps": 2, "seed": 5})


def test_seeded_training_is_reproducible():
    a = Trainer(_cfg(), _images(), progress=False)
    a.fit(steps=2)
    b = Trainer(_cfg(), _images(), progress=False)
    b.fit(steps=2)
    assert a.history.steps == b.history.steps
    for (k, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    assert all(v >= 0 for v in a.history.steps[-1].values())
    assert len(a.val_idx) == 6 and len(a.train_idx) == 6  # min_val_images


def test_resume_continues_from_checkpoint(tmp_path):
    full = Trainer(_cfg(), _images(), progress=False)
    full.fit(steps=4)
    first = Trainer(_cfg(), _images(), out_dir=tmp_path, progress=False)
    first.fit(steps=2)  # validation at step 2 writes the checkpoint
    resumed = Trainer(_cfg(), _images(), out_dir=tmp_path, progress=False)
    assert resumed.load_checkpoint(tmp_path)
    assert resumed.step == 2
    resumed.fit(steps=4)
    assert resumed.step == 4 and len(resumed.history.steps) == 4
    # same data order and defects as an uninterrupted run
    np.testing.assert_allclose(
        [s["g"] for s in resumed.history.steps], [s["g"] for s in full.history.steps], rtol=1e-4
    )
    lr = resumed.opt_g.param_groups[0]["lr"]
    assert lr <= _cfg().train.lr


def test_generator_step_leaves_discriminator_batchnorm_as_its_own_step_set_it():
    t = Trainer(_cfg(), _images(), progress=False)
    disc = t.net.discriminator
    snap = {}
    update = t._update

    def spy(opt, loss):
        update(opt, loss)
        if opt is t.opt_c:  # right after C's own step
            snap.update({k: v.clone() for k, v in disc.state_dict().items() if "running" in k})

    t._update = spy
    t.train_step(t.train_idx[:4])
    assert snap, "the discriminator has BatchNorm running statistics"
    for k, v in snap.items():
        assert torch.equal(disc.state_dict()[k], v), k
    assert disc.training and all(p.requires_grad for p in disc.parameters())  # restored
