import sys, torch, torch.nn as nn, torch.nn.functional as F
FIXED = "--fixed" in sys.argv
torch.manual_seed(0)
teacher = nn.Linear(20, 10); student = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(student.parameters(), lr=1e-3)
def distill_loss(s_logits, t_logits, T=0.01):
    p_t = F.softmax(t_logits / T, dim=-1)
    if FIXED:
        return -(p_t * F.log_softmax(s_logits / T, dim=-1)).sum(-1).mean()
    return -(p_t * torch.log(F.softmax(s_logits / T, dim=-1))).sum(-1).mean()
for step in range(30):
    x = torch.randn(32, 20)
    with torch.no_grad():
        t = teacher(x)
    loss = distill_loss(student(x), t)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
