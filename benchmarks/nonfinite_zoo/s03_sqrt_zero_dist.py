import sys, torch, torch.nn as nn
FIXED = "--fixed" in sys.argv
torch.manual_seed(2)
enc = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 8))
opt = torch.optim.SGD(enc.parameters(), lr=0.05)
def euclidean(a, b):
    d2 = ((a - b) ** 2).sum(-1)
    return torch.sqrt(d2 + 1e-8) if FIXED else torch.sqrt(d2)
def contrastive(za, zb, same, margin=1.0):
    d = euclidean(za, zb)
    return (same * d ** 2 + (1 - same) * torch.clamp(margin - d, min=0) ** 2).mean()
data = torch.randn(200, 10)
for step in range(30):
    i = torch.randint(0, 200, (32,)); j = torch.randint(0, 200, (32,))
    j[:4] = i[:4]  # some pairs are the same sample
    same = (i == j).float()
    loss = contrastive(enc(data[i]), enc(data[j]), same)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
