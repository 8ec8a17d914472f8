import sys, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
FIXED = "--fixed" in sys.argv
torch.manual_seed(5)
raw = torch.randn(256, 12)
raw[77] = 3.0                       # a constant row (a sensor stuck at one value)
mu, sd = raw.mean(1, keepdim=True), raw.std(1, keepdim=True)
x = (raw - mu) / (sd + 1e-6) if FIXED else (raw - mu) / sd     # per-sample standardisation: 0/0 on row 77
y = torch.randint(0, 4, (256,))
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(3):
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(); loss.backward(); opt.step()
    print(epoch, loss.item())
