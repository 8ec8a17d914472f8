import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(4)
class Pool(nn.Module):
    """Attention pooling over a padded sequence."""
    def __init__(self, d):
        super().__init__(); self.score = nn.Linear(d, 1)
    def forward(self, h, pad):
        s = self.score(h).squeeze(-1).masked_fill(pad, float("-inf"))
        w = torch.softmax(s, dim=-1)
        if FIXED:
            w = torch.nan_to_num(w)
        return (w.unsqueeze(-1) * h).sum(1)
class Classifier(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.Embedding(50, 16); self.pool = Pool(16); self.fc = nn.Linear(16, 2)
    def forward(self, tok, pad): return self.fc(self.pool(self.emb(tok), pad))
model = Classifier(); opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(30):
    lengths = torch.randint(0, 10, (16,))       # some sequences are empty
    if FIXED:
        lengths = lengths.clamp(min=1)
    tok = torch.randint(1, 50, (16, 10)); pad = torch.arange(10)[None] >= lengths[:, None]
    y = torch.randint(0, 2, (16,))
    loss = F.cross_entropy(model(tok, pad), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
