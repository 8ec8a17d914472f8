import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(11)
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 125, growth_interval=5)   # overflows at first, by design
for step in range(30):
    x = torch.randn(32, 16); y = torch.randint(0, 4, (32,))
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = F.cross_entropy(out.float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    if step % 10 == 0: print(step, loss.item(), scaler.get_scale())
