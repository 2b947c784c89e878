"""Plausible mistakes in lab 01 and the exact total each must score (out of 11), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
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

NO_OP_LOOP = """\
def train_loop(model, train_loader, num_epochs, lr):
    return model  # returns without training"""

NO_GRAD_CLEARING = """\
def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad  # right update, but p.grad is never cleared"""

NO_RELU_MLP = """\
def make_mlp(in_features, hidden, num_classes):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Linear(hidden, num_classes))  # forgot the ReLU"""

HARD_CODED_INITIAL_LOSS = """\
def initial_loss(num_classes):
    return 2.303  # notebook 01's first loss: right for 10 classes only"""

LOG2_INITIAL_LOSS = """\
def initial_loss(num_classes):
    return math.log2(num_classes)  # bits instead of nats: cross-entropy uses the natural log"""

MISTAKES = [
    # softmax-tests 1 of 2: of its checks (weights 1+1+2+2 visible, 1+2+1+1+1 hidden = 12), the overflowing
    # softmax fails "large scores (±1000)" (2), "adding a constant to a row" (2: +100 overflows) and "extreme
    # scores" (2), and passes the rest (6 of 12) -> 2 * 6/12 = 1.
    # accuracy-tests 0 of 1: every check compares the accuracy value, and 50.0 is not 0.5.
    # 11 - 1 - 1 = 9.
    ({"softmax-answer": OVERFLOWING_SOFTMAX, "accuracy-answer": PERCENT_ACCURACY}, 9),
    # train-loop-tests 1.2 of 2: of its checks (weights 1+2+2 visible, 1+2+1+1 hidden = 10), the weights differ
    # from the reference loop's in "the returned model's weights" (2) and "an MLP, batches of 16, 16, 16 and 2"
    # (2); the batch counts, "lr=0 ...; lr=0.1 ... lowers the loss" and both digits accuracies still pass
    # (softmax regression learns without zero_grad too) -> 2 * 6/10 = 1.2. 11 - 0.8 = 10.2.
    ({"train-loop-answer": NO_ZERO_GRAD}, 10.2),
    # train-loop-tests 0 of 2: a loop that returns without training takes no batches, matches no reference
    # weights, learns nothing on the digits, and fails the lr check too: at lr=0 the weights stay, but lr=0.1 must
    # also move them and lower the loss (that check alone used to give it 0.2). 11 - 2 = 9.
    ({"train-loop-answer": NO_OP_LOOP}, 9),
    # sgd-tests 1 of 2: of its checks (weights 2+1+1 visible, 2+1+1 hidden = 8), the first step is still right
    # ("one step matches" 2, "in place" 1, "skips a parameter whose .grad is None" 1 pass), but ".grad is
    # cleared" (1), "4 steps ... match" (2) and "lr=0: ... gradient cleared" (1) fail -> 2 * 4/8 = 1.
    # mlp-tests 0.5 of 1: of its checks (weights 1+1+2+1+2 visible, 1+1+1 hidden = 10), the parameter count,
    # output shape, 85% test accuracy and the hidden counts/shapes pass (5); "predictions match Linear -> ReLU
    # -> Linear" (2), "raw scores" (1), "is Linear, ReLU, Linear" (1) and "scores for inputs of -100 and +100"
    # (1) fail -> 5/10 = 0.5. 11 - 1 - 0.5 = 9.5.
    ({"sgd-answer": NO_GRAD_CLEARING, "mlp-answer": NO_RELU_MLP}, 9.5),
    # initial-loss-tests 0.25 of 1: of its four predictions (weight 1 each), only 10 classes is within 3 %
    # (2.303 against about 2.32); 2, 100 and 1000 classes are not. 11 - 0.75 = 10.25.
    ({"initial-loss-answer": HARD_CODED_INITIAL_LOSS}, 10.25),
    # initial-loss-tests 0 of 1: log2(C) is log(C) / log(2), 44 % too large for every C. 11 - 1 = 10.
    ({"initial-loss-answer": LOG2_INITIAL_LOSS}, 10),
]
