import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(3)
class Attention(nn.Module):
    def __init__(self, d):
        super().__init__(); self.q = nn.Linear(d, d); self.k = nn.Linear(d, d); self.v = nn.Linear(d, d)
    def forward(self, x):
        s = self.q(x) @ self.k(x).transpose(1, 2)   # no 1/sqrt(d) scaling
        if FIXED:
            s = s - s.amax(-1, keepdim=True)
        w = torch.exp(s)
        w = w / w.sum(-1, keepdim=True)
        return w @ self.v(x)
class Net(nn.Module):
    def __init__(self):
        super().__init__(); self.attn = Attention(32); self.out = nn.Linear(32, 2)
    def forward(self, x): return self.out(self.attn(x).mean(1))
model = Net(); opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    x = torch.randn(8, 12, 32) * 3; y = torch.randint(0, 2, (8,))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
