"""G003 and T007 on one module trained by two optimizers (Lightning's manual optimization builds a GAN's generator
and discriminator optimizers over one LightningModule and toggles ``requires_grad`` between them, as its GAN example
does): what the other optimizer trains is neither "in no optimizer" (G003) nor a frozen BatchNorm warning (T007); a
layer no optimizer holds is still G003."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdaudit.training.doctor.runner import run_watched

pytest.importorskip("lightning")

GAN = """\
# Lightning manual optimization GAN, in the style of examples/pytorch/domain_templates/generative_adversarial_net.py
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning.pytorch import LightningModule, Trainer, seed_everything

class GAN(LightningModule):
    def __init__(self, latent_dim=8, lr=2e-4):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(latent_dim, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2), nn.Linear(32, 64), nn.Tanh())
        self.discriminator = nn.Sequential(nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1), nn.Sigmoid())
    def forward(self, z):
        return self.generator(z)
    def training_step(self, batch, batch_idx):
        imgs, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(imgs.shape[0], self.hparams.latent_dim).type_as(imgs)
        valid = torch.ones(imgs.size(0), 1).type_as(imgs)
        fake = torch.zeros(imgs.size(0), 1).type_as(imgs)
        # generator
        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy(self.discriminator(self(z)), valid)
        self.log("g_loss", g_loss)
        self.manual_backward(g_loss)
        opt_g.step(); opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)
        # discriminator
        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy(self.discriminator(imgs), valid)
        fake_loss = F.binary_cross_entropy(self.discriminator(self(z).detach()), fake)
        d_loss = (real_loss + fake_loss) / 2
        self.log("d_loss", d_loss)
        self.manual_backward(d_loss)
        opt_d.step(); opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)
    def configure_optimizers(self):
        lr = self.hparams.lr
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        return [opt_g, opt_d], []

if __name__ == "__main__":
    seed_everything(0)
    ds = TensorDataset(torch.rand(48, 64) * 2 - 1, torch.zeros(48))
    model = GAN()
    trainer = Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(ds, batch_size=4))
    print("RESULT global_step", trainer.global_step, "g_loss", float(trainer.callback_metrics["g_loss"]), "d_loss", float(trainer.callback_metrics["d_loss"]))
"""


def run(tmp_path: Path, *args: str) -> list[tuple[str, str, str]]:
    script = tmp_path / "gan.py"
    script.write_text(GAN)
    report = run_watched(["python", str(script), *args], steps=10)
    return [(f.rule, f.path, str(f.severity)) for f in report.findings]


def test_a_gan_trained_by_two_optimizers_is_no_g003_and_no_frozen_batchnorm_warning(tmp_path: Path) -> None:
    found = run(tmp_path)
    assert not [f for f in found if f[0] == "G003"], found
    assert not [f for f in found if f[2] in ("error", "warning")], found



def test_g003_still_names_a_layer_no_optimizer_holds(tmp_path: Path) -> None:
    # the filter asks every live optimizer: a layer none of them holds stays G003 (one optimizer, half the model)
    import torch
    from torch import nn

    from ssdaudit import watch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with watch(model, opt) as w:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
            opt.step()
    g003 = [f for f in w.findings() if f.rule == "G003"]
    assert g003 and set(g003[0].members) == {"2.weight", "2.bias"}
