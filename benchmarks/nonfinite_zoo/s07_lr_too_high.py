import sys, torch, torch.nn as nn
FIXED = "--fixed" in sys.argv
torch.manual_seed(6)
X = torch.randn(512, 8) * 10; w_true = torch.randn(8, 1); Y = X @ w_true
model = nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=1e-3 if FIXED else 0.5)
loss_fn = nn.MSELoss()
for step in range(40):
    i = torch.randint(0, 512, (64,))
    loss = loss_fn(model(X[i]), Y[i])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0: print(step, loss.item())
