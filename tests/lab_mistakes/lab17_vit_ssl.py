"""Plausible mistakes in lab 17 and the exact total each must score (out of 11), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

CHANNEL_LAST_PATCHES = """\
def patchify(X, p):
    B, C, H, W = X.shape
    grid = X.reshape(B, C, H // p, p, W // p, p)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), C * p * p)  # channel last, not first


def patch_embed(X, weight, bias, p):
    return patchify(X, p) @ weight.reshape(len(weight), -1).T + bias"""

SELF_IN_DENOMINATOR = """\
def nt_xent(z1, z2, temperature):
    n = len(z1)
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    s = z @ z.T / temperature                     # the diagonal (similarity 1 with itself) is left in the sum
    positive = s[torch.arange(2 * n), torch.arange(2 * n).roll(n)]
    return (s.logsumexp(dim=1) - positive).mean()"""

IMAGES_TO_CAPTIONS_ONLY = """\
def clip_loss(image_features, text_features, logit_scale):
    x, y = F.normalize(image_features, dim=1), F.normalize(text_features, dim=1)
    logits = logit_scale.exp() * x @ y.T
    return F.cross_entropy(logits, torch.arange(len(logits)))   # images pick captions; not the other way round"""

AVERAGE_BEFORE_NORMALISING = """\
def zero_shot_predict(image_features, prompt_features):
    classes = F.normalize(prompt_features.mean(dim=1), dim=-1)   # long prompts outweigh short ones
    return (F.normalize(image_features, dim=-1) @ classes.T).argmax(dim=1)"""

ONE_VIEW_OF_NEGATIVES = """\
def nt_xent_floor(batch_size, temperature):
    return math.log(1 + (batch_size - 1) * math.exp(-1 / temperature))   # counts the other images once, not twice"""

MISTAKES = [
    # patch-tests: 1 + 1 + 2 visible, 1 + 1 + 1 hidden = 7. Channel-last patches have the right shape (1 of 7) but
    # every value differs from unfold and from the convolution -> 2 * 1/7.
    # ntxent-tests: 1 + 2 visible, 2 + 1 + 1 hidden = 7. Leaving k = i in the sum still returns a scalar (1 of 7);
    # every value and gradient differs -> 3 * 1/7.
    ({"patch-answer": CHANNEL_LAST_PATCHES, "ntxent-answer": SELF_IN_DENOMINATOR},
     11 - 2 * (1 - 1 / 7) - 3 * (1 - 1 / 7)),
    # clip-tests: 2 visible, 1 + 1 hidden = 4. One direction differs from the symmetric average in every case.
    ({"clip-answer": IMAGES_TO_CAPTIONS_ONLY}, 11 - 2),
    # zeroshot-tests: 1 + 1 visible, 1 + 1 hidden = 4. Averaging raw prompt embeddings is right with one prompt
    # per class and when a class's prompts share a direction (the one-image test); wrong when lengths differ
    # -> 2 * 2/4.
    ({"zeroshot-answer": AVERAGE_BEFORE_NORMALISING}, 11 - 2 * (1 - 2 / 4)),
    # floor-tests: 2 visible + 4 hidden, weight 1 each = 6. N - 1 negatives instead of 2N - 2 is right only for
    # N = 1 (no negatives either way): 1 of 6 -> 2 * 1/6.
    ({"floor-answer": ONE_VIEW_OF_NEGATIVES}, 11 - 2 * (1 - 1 / 6)),
]
