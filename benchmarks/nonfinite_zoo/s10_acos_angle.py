import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(9)
net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 3))
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
def angular_loss(pred, target):
    cos = F.cosine_similarity(pred, target, dim=-1)
    if FIXED:
        cos = cos.clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.acos(cos).mean()
for step in range(40):
    v = F.normalize(torch.randn(64, 3), dim=-1)
    t = v.clone()
    t[:8] = F.normalize(net(v[:8]).detach(), dim=-1)   # some targets are exactly the prediction's direction
    loss = angular_loss(net(v), t)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
