"""A Lightning script resumed the Lightning way: Trainer.fit(model, ckpt_path=...)."""
import argparse
import os

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--ckpt_path", default=None)
p.add_argument("--dir", default="lightning_ckpts")
p.add_argument("--weights-only", action="store_true", help="the bug: load the weights, then fit from scratch")
args = p.parse_args()


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.7)}


L.seed_everything(0, verbose=False)
data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
trainer = L.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", default_root_dir=args.dir,
                    callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=args.dir, save_top_k=-1)])
if args.weights_only and args.ckpt_path:
    trainer.fit(Regressor.load_from_checkpoint(args.ckpt_path), DataLoader(data, batch_size=8))
else:
    trainer.fit(Regressor(), DataLoader(data, batch_size=8), ckpt_path=args.ckpt_path)
