"""Plausible mistakes in lab 13 and the exact total each must score (out of 18), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution. Every
set-up's test cell is worth 2 points, split by weight over its checks: the name (weight 2), the fixed set-up's
test accuracy from seed 0 (weight 1, visible) and its validation accuracy from seed 1 (weight 1, hidden). So a
right name with a fix that still fails scores 2 * 2/4 = 1 point of the set-up's 2, and a wrong name with a
working fix scores 1 point too.
"""

STEP_STILL_NOT_CLEARING = """\
def fixed_b(seed: int = 0) -> Setup:
    def step(model, optimizer, X, y, loss_fn):
        optimizer.zero_grad               # moved to the top, still not called: the gradients still pile up
        y_hat = model(X)
        loss = loss_fn(y_hat, y)
        loss.backward()
        optimizer.step()
        return loss

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), train_step=step,
                 test_loader=test_loader)"""

NLL_ON_PROBABILITIES = """\
def fixed_c(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    # keeps the softmax and swaps the loss: nll_loss expects log-probabilities, so this minimises -p[y]
    return Setup(DigitNetC(), train_loader, val_loader, sgd(lr=0.05), loss_fn=F.nll_loss,
                 test_loader=test_loader)"""

INFERENCE_MODE_INSTEAD_OF_EVAL = """\
def fixed_f(seed: int = 0) -> Setup:
    def predict(model, loader):
        with torch.inference_mode():      # no autograd, but the model is still in training mode
            return torch.cat([model(X).argmax(dim=1) for X, _ in loader])

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 10))
    return Setup(model, train_loader, val_loader, sgd(lr=0.05), predict_fn=predict,
                 test_loader=test_loader)"""

UNCHANGED = """\
def fixed_{x}(seed: int = 0) -> Setup:
    return broken_{x}(seed)               # named the bug, changed nothing"""

MISTAKES = [
    # Right names; three fixes that still fail both accuracy checks (set-ups B, C, F): each of those set-ups
    # keeps its name's 1 point of 2. 18 - 3 * 1 = 15.
    ({"b-fix": STEP_STILL_NOT_CLEARING, "c-fix": NLL_ON_PROBABILITIES,
      "f-fix": INFERENCE_MODE_INSTEAD_OF_EVAL}, 15.0),
    # Right fixes; three plausible wrong names: the wrong direction for G's learning rate, the loader's order
    # for H's mismatched labels, dead ReLUs for I's detached features. Each costs the name's 1 point: 18 - 3.
    ({"g-name": 'BUG_G = "learning_rate_100x_too_low"', "h-name": 'BUG_H = "unshuffled_training_data"',
      "i-name": 'BUG_I = "dead_relu_init"'}, 15.0),
    # Every bug named, every set-up returned unchanged: every broken set-up must stay below its accuracy
    # threshold, from both seeds, so each set-up scores its name's point only. 9 * 1 = 9.
    ({f"{x}-fix": UNCHANGED.format(x=x) for x in "abcdefghi"}, 9.0),
]
