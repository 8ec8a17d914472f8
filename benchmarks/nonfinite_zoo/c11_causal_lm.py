import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(10)
class Block(nn.Module):
    def __init__(self, d=32, h=4):
        super().__init__(); self.h = h; self.qkv = nn.Linear(d, 3 * d); self.proj = nn.Linear(d, d); self.ln = nn.LayerNorm(d)
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (C // self.h) ** 0.5
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
class LM(nn.Module):
    def __init__(self, vocab=40, d=32):
        super().__init__(); self.emb = nn.Embedding(vocab, d); self.blocks = nn.Sequential(Block(), Block()); self.head = nn.Linear(d, vocab)
    def forward(self, idx): return self.head(self.blocks(self.emb(idx)))
model = LM(); opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
data = torch.randint(0, 40, (1000,))
for step in range(30):
    i = torch.randint(0, 1000 - 17, (8,))
    x = torch.stack([data[j:j + 16] for j in i]); y = torch.stack([data[j + 1:j + 17] for j in i])
    y[:, :2] = -100   # prompt positions not trained
    loss = F.cross_entropy(model(x).view(-1, 40), y.view(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
