"""Plausible mistakes in lab 01 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
"""

OVERFLOWING_SOFTMAX = """\
def softmax(logits):
    exp = logits.exp()  # no max subtraction: overflows for large logits
    return exp / exp.sum(dim=1, keepdim=True)"""

PERCENT_ACCURACY = """\
def accuracy(y_hat, y):
    return 100 * (y_hat.argmax(1) == y).float().mean().item()  # a percentage, not a fraction"""

NO_ZERO_GRAD = """\
def train_loop(model, train_loader, num_epochs, lr):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(num_epochs):
        for X, y in train_loader:
            loss = F.cross_entropy(model(X), y)
            loss.backward()  # forgot optimizer.zero_grad(): gradients pile up across batches
            optimizer.step()
    return model"""

MISTAKES = [
    ({"softmax-answer": OVERFLOWING_SOFTMAX, "accuracy-answer": PERCENT_ACCURACY}, 7),
    ({"train-loop-answer": NO_ZERO_GRAD}, 8),
]
