import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(8)
class Gamma(nn.Module):
    """A learnable gamma correction of the features."""
    def __init__(self):
        super().__init__(); self.gamma = nn.Parameter(torch.tensor(0.5))
    def forward(self, x):
        return (x.clamp(min=0) if FIXED else x) ** self.gamma
model = nn.Sequential(nn.Linear(10, 10), Gamma(), nn.Linear(10, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    x = torch.randn(32, 10); y = torch.randint(0, 3, (32,))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
