import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(1)
class Embedder(nn.Module):
    def __init__(self):
        super().__init__(); self.net = nn.Sequential(nn.Linear(16, 4), nn.ReLU())
    def forward(self, x):
        z = self.net(x)
        if FIXED:
            return F.normalize(z, dim=-1)
        return z / z.norm(dim=-1, keepdim=True)
class Model(nn.Module):
    def __init__(self):
        super().__init__(); self.embed = Embedder(); self.cls = nn.Linear(4, 3)
    def forward(self, x): return self.cls(self.embed(x))
model = Model(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(30):
    x = torch.randn(64, 16); y = torch.randint(0, 3, (64,))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
