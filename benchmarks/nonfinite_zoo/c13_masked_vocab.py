import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(12)
V = 50
allowed = torch.zeros(V, dtype=torch.bool); allowed[:30] = True     # constrained decoding: 20 tokens never allowed
model = nn.Sequential(nn.Embedding(V, 32), nn.Flatten(), nn.Linear(32 * 4, 64), nn.GELU(), nn.Linear(64, V))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(30):
    ctx = torch.randint(0, V, (16, 4)); y = torch.randint(0, 30, (16,))
    y[::5] = -100
    logits = model(ctx).masked_fill(~allowed, float("-inf"))
    loss = F.cross_entropy(logits, y, ignore_index=-100)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
