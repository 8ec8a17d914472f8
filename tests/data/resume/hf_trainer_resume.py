"""A Hugging Face Trainer script resumed the HF way: trainer.train(resume_from_checkpoint=DIR)."""
import argparse

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

p = argparse.ArgumentParser()
p.add_argument("--resume_from_checkpoint", default=None)
p.add_argument("--out", default="hf_out")
args = p.parse_args()


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


torch.manual_seed(0)
xs, ys = torch.randn(64, 4), torch.randn(64, 1)
data = [{"x": xs[i], "labels": ys[i]} for i in range(64)]
targs = TrainingArguments(output_dir=args.out, max_steps=12, save_steps=4, per_device_train_batch_size=8,
                          learning_rate=0.05, logging_steps=100, report_to=[], use_cpu=True, seed=0,
                          disable_tqdm=True, dataloader_num_workers=0)
trainer = Trainer(model=Tiny(), args=targs, train_dataset=data)
trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
