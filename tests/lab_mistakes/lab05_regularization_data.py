"""Plausible mistakes in lab 05 and the exact total each must score (out of 11), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution. Points
are split over a test cell's checks by weight, so totals can be fractional (the grader rounds to 6 decimals).
"""

SMOOTHING_OVER_WRONG_CLASSES = """\
def label_smoothed_cross_entropy(logits, y, eps):
    C = logits.shape[1]
    q = torch.full_like(logits, eps / (C - 1))   # eps spread over the wrong classes only: another loss
    q[torch.arange(len(y)), y] = 1 - eps
    return -(q * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()"""

SWAPPED_MIXUP_WEIGHTS = """\
def mixup(X, y, lam, perm, num_classes):
    y_onehot = F.one_hot(y, num_classes).float()
    X_mix = lam * X + (1 - lam) * X[perm]
    y_mix = (1 - lam) * y_onehot + lam * y_onehot[perm]   # label weights swapped: they no longer match the image
    return X_mix, y_mix"""

STATE_DICT_NOT_COPIED = """\
class EarlyStopping:
    def __init__(self, model, patience=3, min_delta=0.0):
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0

    def __call__(self, history):
        loss = history.last["val_loss"]
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, history.last["epoch"], 0
            self.best_state = self.model.state_dict()   # the live tensors: they keep changing after this epoch
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.restore()
            return True
        return False

    def restore(self):
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)"""

INVERSE_COUNTS_ONLY = """\
def class_weights(y, num_classes):
    return 1.0 / torch.bincount(y, minlength=num_classes).float()   # right ratios, wrong scale"""

SAMPLER_WITHOUT_REPLACEMENT = """\
def balanced_sampler(y, generator=None):
    weights = 1.0 / torch.bincount(y)[y].double()
    return WeightedRandomSampler(weights, num_samples=len(y), replacement=False, generator=generator)"""

FLOOR_ZERO = """\
def smoothed_loss_floor(eps, num_classes):
    return 0.0  # true of plain cross-entropy (infinitely confident logits), not with label smoothing"""

FLOOR_OVER_WRONG_CLASSES = """\
def smoothed_loss_floor(eps, num_classes):
    q_true, q_other = 1 - eps, eps / (num_classes - 1)  # eps spread over the wrong classes only: another loss
    return -(q_true * np.log(q_true) + (num_classes - 1) * q_other * np.log(q_other)).item()"""

MISTAKES = [
    # label-smoothing-tests 2/11 of 2: of its checks (weights 2+1+2+1 visible, 2+1+1+1 hidden = 11), only "eps = 0
    # gives the plain cross-entropy" (1) passes: with eps = 0 both conventions are the one-hot target. Every other
    # check uses eps > 0 -> 2 * 1/11 = 0.181818. 11 - 2 + 0.181818 = 9.181818.
    ({"label-smoothing-answer": SMOOTHING_OVER_WRONG_CLASSES}, 9.181818),
    # mixup-tests 2 * 4/11: of its checks (weights 2+2+1+2 visible, 1+1+1+1 hidden = 11), the images (2), "X and
    # y are left unchanged" (1) and "num_classes columns even when classes are absent" (1: all labels equal, so
    # the swap changes nothing) pass; every check of the soft labels fails -> 0.727273.
    # class-weights-tests 0 of 1: 1 / n_c has the right ratios but not the scale N / (C * n_c) in every check.
    # 11 - 2 + 0.727273 - 1 = 8.727273.
    ({"mixup-answer": SWAPPED_MIXUP_WEIGHTS, "class-weights-answer": INVERSE_COUNTS_ONLY}, 8.727273),
    # early-stopping-tests 3 * 7/16: of its checks (weights 1+1+1+3+2+2 visible, 1+1+1+1+1+1 hidden = 16), the
    # start values (1), the answers (1), best_epoch/best_loss (1), when fit stops (2), restore() without saved
    # weights (1) and the bool answers (1) pass; every check of the restored weights fails (3+2+1+1+1+1 = 9)
    # -> 1.3125.
    # sampler-tests 2 * 6/12: of its checks (weights 1+2+3+1 visible, 1+2+1+1 hidden = 12), the weights (2), the
    # DataLoader (1), the three-class weights (1), the same seed (1) and no generator (1) pass; "with
    # replacement" (1) and both class-balance checks (3+2) fail -> 1.0.
    # 11 - 3 + 1.3125 - 2 + 1 = 8.3125.
    ({"early-stopping-answer": STATE_DICT_NOT_COPIED, "sampler-answer": SAMPLER_WITHOUT_REPLACEMENT}, 8.3125),
    # loss-floor-tests 0 of 1: 0 is outside 1 % of every (positive) floor. 11 - 1 = 10.
    ({"loss-floor-answer": FLOOR_ZERO}, 10),
    # loss-floor-tests 1/4 of 1: the other smoothing convention's entropy is 9 % (eps 0.1, 10 classes), 18 %
    # (0.2, 5) and 1.8 % (0.02, 50) off, but only 0.1 % with 1000 classes, where the two conventions nearly
    # agree. 11 - 0.75 = 10.25.
    ({"loss-floor-answer": FLOOR_OVER_WRONG_CLASSES}, 10.25),
]
