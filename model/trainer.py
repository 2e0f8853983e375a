"""Training loop (spec §4–5): C, G, Δ updated in that order each step; plateau schedule; resume.

Everything random goes through one ``torch.Generator`` seeded from ``cfg.train.seed`` (data order,
validation split, synthetic defects), so a fixed seed on the same device gives the same run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.anomalies import AnomalyGenerator
from model.artefact import load_state
from model.config import GRDConfig
from model.infer import autocast_ctx
from model.losses import discriminator_loss, generator_loss, segmentation_loss
from model.networks import GRDNet

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoint"


@dataclass
class History:
    steps: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)


def split_indices(n: int, fraction: float, minimum: int, gen: torch.Generator) -> tuple[
        np.ndarray, np.ndarray]:
    """Random (train, val) index split; val has max(minimum, round(fraction·n)) items (< n)."""
    n_val = min(max(minimum, int(round(fraction * n))), n - 1) if n > 1 else 0
    perm = torch.randperm(n, generator=gen).numpy()
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_precision(cfg: GRDConfig, device: torch.device) -> str:
    a = cfg.train.amp
    if a == "off":
        return "fp32"
    if a == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return a


class Trainer:
    """Trains one :class:`GRDNet` on good images (uint8 (N, S, S, C)) and optional ROIs."""

    def __init__(
        self,
        cfg: GRDConfig,
        images: np.ndarray,
        rois: np.ndarray | None = None,
        *,
        device: torch.device | str | None = None,
        textures: np.ndarray | None = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        t = cfg.train
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gen = torch.Generator().manual_seed(t.seed)
        torch.manual_seed(t.seed)  # weight init
        self.net = GRDNet(cfg).to(self.device)
        self.precision = train_precision(cfg, self.device)
        self.memory_format = (torch.channels_last if t.channels_last and self.device.type == "cuda"
                              else torch.contiguous_format)
        self.net = self.net.to(memory_format=self.memory_format)
        tr, va = split_indices(len(images), t.val_fraction, t.min_val_images, self.gen)
        self.train_idx, self.val_idx = tr, va
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if rois is None:
            rois = np.ones(images.shape[:3], bool)
        self.rois = torch.from_numpy(np.ascontiguousarray(rois)).to(torch.uint8)[:, None]
        tex = None
        if textures is not None:
            tex = torch.from_numpy(textures).permute(0, 3, 1, 2).float().div(255.0)
        self.anomaly = AnomalyGenerator(cfg.anomaly, tex)
        nets = self.net
        betas = (t.beta1, t.beta2)
        self.opt_c = torch.optim.Adam(nets.discriminator.parameters(), lr=t.lr, betas=betas)
        self.opt_g = torch.optim.Adam(nets.generator.parameters(), lr=t.lr, betas=betas)
        self.opt_s = torch.optim.Adam(nets.segmenter.parameters(), lr=t.lr_seg or t.lr,
                                      betas=betas)
        self.opts = {"c": self.opt_c, "g": self.opt_g, "s": self.opt_s}
        self.scheds = {
            k: torch.optim.lr_scheduler.ReduceLROnPlateau(
                o, mode="min", factor=t.plateau_factor, patience=t.plateau_patience)
            for k, o in self.opts.items()
        }
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.step = 0
        self.epoch = 0
        self.history = History()
        self._order = np.zeros(0, dtype=np.int64)  # rest of the current epoch's permutation

    # -- data -------------------------------------------------------------------------------
    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ii = torch.from_numpy(idx)
        x = self.images[ii].to(self.device).float().div_(255.0)
        r = self.rois[ii].to(self.device).float()
        return x, r

    def _mf(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=self.memory_format)

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, idx: np.ndarray) -> dict[str, float]:
        """One optimisation step on the images ``idx``: C, then G, then Δ."""
        cfg = self.cfg
        x, r = self._batch(idx)
        syn = self.anomaly(x, self.gen, r, geometric=True)
        x, xn = self._mf(syn.clean), self._mf(syn.noisy)
        net = self.net
        net.train()
        with autocast_ctx(self.device, self.precision):
            g = net.generator(xn)
            # C: real X → 1, fake X̂ (detached) → 0
            real_logit, f_real = net.discriminator(x)
            fake_logit, _ = net.discriminator(g.x_hat.detach())
            loss_c = discriminator_loss(real_logit, fake_logit)
        self._update(self.opt_c, loss_c)
        # G: C frozen — eval mode, so BatchNorm normalises X and X̂ with the same (running)
        # statistics (with batch statistics feature matching cannot see a global shift of X̂) and
        # leaves them as C's own step set them; no gradients into C's weights
        disc = net.discriminator
        disc.eval().requires_grad_(False)
        try:
            with autocast_ctx(self.device, self.precision):
                with torch.no_grad():  # features of the updated C for feature matching
                    _, f_real = disc(x)
                _, f_fake = disc(g.x_hat)
                lg = generator_loss(x, g.x_hat, g.z, g.z_hat, f_real.detach(), f_fake, cfg.loss)
            self._update(self.opt_g, lg.total)
        finally:
            disc.train().requires_grad_(True)
        with autocast_ctx(self.device, self.precision):
            logits = net.segmenter(xn, g.x_hat.detach())
            loss_s = segmentation_loss(logits, syn.mask, syn.roi, cfg.loss)
        self._update(self.opt_s, loss_s)
        vals = torch.stack([loss_c, lg.total, lg.adv, lg.con, lg.enc, loss_s]).detach().float()
        return dict(zip(("c", "g", "adv", "con", "enc", "s"), vals.cpu().tolist(), strict=True))

    def _update(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {self.step}")
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Losses on the validation images, perturbed with a fixed seed, no geometric aug."""
        if len(self.val_idx) == 0:
            return {}
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.train.seed + 1)
        net = self.net.eval()
        tot = {"val_c": 0.0, "val_g": 0.0, "val_s": 0.0}
        bs = cfg.train.batch_size
        n = 0
        for s in range(0, len(self.val_idx), bs):
            idx = self.val_idx[s:s + bs]
            x, r = self._batch(idx)
            syn = self.anomaly(x, gen, r, geometric=False)
            with autocast_ctx(self.device, self.precision):
                g = net.generator(self._mf(syn.noisy))
                rl, f_real = net.discriminator(self._mf(syn.clean))
                fl, f_fake = net.discriminator(g.x_hat)
                lg = generator_loss(syn.clean, g.x_hat, g.z, g.z_hat, f_real, f_fake, cfg.loss)
                logits = net.segmenter(self._mf(syn.noisy), g.x_hat)
                ls = segmentation_loss(logits, syn.mask, syn.roi, cfg.loss)
            k = len(idx)
            tot["val_c"] += float(discriminator_loss(rl, fl)) * k
            tot["val_g"] += float(lg.total) * k
            tot["val_s"] += float(ls) * k
            n += k
        net.train()
        return {k: v / n for k, v in tot.items()}

    # -- loop -------------------------------------------------------------------------------
    def fit(self, epochs: int | None = None, steps: int | None = None) -> History:
        """Train for ``steps`` steps if given, else ``epochs`` epochs (defaults from config)."""
        t = self.cfg.train
        bs = min(t.batch_size, len(self.train_idx))
        per_epoch = max(1, len(self.train_idx) // bs)
        steps = steps if steps is not None else t.steps
        total = steps if steps is not None else (epochs or t.epochs) * per_epoch
        val_every = t.val_every_steps or per_epoch
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc="train",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        last_val: dict[str, float] = {}
        while self.step < total:
            if len(self._order) < bs:
                perm = torch.randperm(len(self.train_idx), generator=self.gen).numpy()
                self._order = self.train_idx[perm]
                self.epoch += 1 if self.step > 0 else 0
            idx, self._order = self._order[:bs], self._order[bs:]
            losses = self.train_step(idx)
            self.step += 1
            self.history.steps.append({"step": self.step, **losses})
            if self.step % val_every == 0 or self.step == total:
                last_val = self.validate()
                if last_val:
                    self.scheds["c"].step(last_val["val_c"])
                    self.scheds["g"].step(last_val["val_g"])
                    self.scheds["s"].step(last_val["val_s"])
                lrs = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.opts.items()}
                self.history.val.append({"step": self.step, **last_val, **lrs})
                if self.out_dir is not None:
                    self.save_checkpoint(self.out_dir)
            bar.update(1)
            bar.set_postfix({"C": f"{losses['c']:.3f}", "G": f"{losses['g']:.2f}",
                             "S": f"{losses['s']:.4f}",
                             **({"valS": f"{last_val['val_s']:.4f}"} if last_val else {})})
        bar.close()
        log.info("trained %d steps in %.1fs", self.step, time.perf_counter() - t0)
        return self.history

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, out_dir: str | Path) -> Path:
        """Weights + generator state (safetensors), optimiser/scheduler state, progress (JSON)."""
        from safetensors.torch import save_file

        d = Path(out_dir) / CKPT_DIR
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        state["__rng__"] = self.gen.get_state()
        save_file(state, str(d / "state.safetensors"))
        torch.save({"opt": {k: o.state_dict() for k, o in self.opts.items()},
                    "sched": {k: s.state_dict() for k, s in self.scheds.items()}},
                   d / "optim.pt")
        (d / "trainer.json").write_text(json.dumps({
            "step": self.step, "epoch": self.epoch, "config": self.cfg.model_dump(mode="json"),
            "history": {"steps": self.history.steps, "val": self.history.val},
            "val_idx": self.val_idx.tolist(), "order": self._order.tolist(),
        }))
        return d

    def load_checkpoint(self, out_dir: str | Path) -> bool:
        """Resume from ``out_dir/checkpoint`` if present; returns whether it did."""
        d = Path(out_dir) / CKPT_DIR
        if not (d / "trainer.json").is_file():
            return False
        meta = json.loads((d / "trainer.json").read_text())
        if meta["config"] != self.cfg.model_dump(mode="json"):
            from model.errors import ModelError

            raise ModelError(f"checkpoint in {d} was made with a different config; use a new --out")
        state = load_state(d / "state.safetensors")
        self.gen.set_state(state.pop("__rng__"))
        self.net.load_state_dict(state)
        opt = torch.load(d / "optim.pt", map_location=self.device, weights_only=True)
        for k, o in self.opts.items():
            o.load_state_dict(opt["opt"][k])
        for k, s in self.scheds.items():
            s.load_state_dict(opt["sched"][k])
        self.step, self.epoch = meta["step"], meta["epoch"]
        self.history = History(meta["history"]["steps"], meta["history"]["val"])
        self.val_idx = np.asarray(meta["val_idx"], dtype=np.int64)
        self.train_idx = np.setdiff1d(np.arange(len(self.images)), self.val_idx)
        self._order = np.asarray(meta.get("order", []), dtype=np.int64)
        log.info("resumed from %s at step %d", d, self.step)
        return True

    def finite(self) -> bool:
        return all(math.isfinite(v) for h in self.history.steps[-1:] for v in h.values())


def summary(history: History) -> dict[str, Any]:
    last = history.steps[-1] if history.steps else {}
    return {"steps": len(history.steps), "last": last, "val": history.val[-1:]}
