import sys, torch, torch.nn as nn
FIXED = "--fixed" in sys.argv
torch.manual_seed(7)
model = nn.Linear(6, 1)   # logistic regression
opt = torch.optim.SGD(model.parameters(), lr=0.5)
X = torch.randn(400, 6) * 30; Y = (X[:, 0] > 0).float()[:, None]
def bce(logits, y):
    if FIXED:
        return nn.functional.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
for step in range(40):
    i = torch.randint(0, 400, (64,))
    loss = bce(model(X[i]), Y[i])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
