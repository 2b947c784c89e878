"""Plausible mistakes in lab 16 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

VARIANCE_AS_SIGMA = """\
def reparameterise(mu, logvar, eps):
    return mu + logvar.exp() * eps  # exp(logvar) is the variance, not the standard deviation


def negative_elbo(x, x_hat, mu, logvar, sigma_x, beta=1.0):
    D = x.shape[-1]
    log_lik = -0.5 * (x - x_hat).square().sum(-1) / sigma_x ** 2 - 0.5 * D * math.log(2 * math.pi * sigma_x ** 2)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return (-log_lik + beta * kl).mean()"""

LOG_OF_SIGMOID = """\
def discriminator_loss(real_logits, fake_logits):
    return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()


def generator_loss(fake_logits, kind="non-saturating"):
    p = torch.sigmoid(fake_logits)  # rounds to 0 or 1 for large logits: log gives -inf
    if kind == "minimax":
        return torch.log(1 - p).mean()
    return -torch.log(p).mean()"""

NO_SQUARE_ROOTS = """\
def alpha_bar(betas):
    return torch.cumprod(1 - betas, dim=0)


def q_sample(x0, t, eps, alpha_bar):
    ab = alpha_bar[t][:, None]
    return ab * x0 + (1 - ab) * eps  # the variances used as the coefficients


def ddpm_loss(model, x0, t, eps, alpha_bar):
    ab = alpha_bar[t][:, None]
    x_t = ab * x0 + (1 - ab) * eps
    return (model(x_t, t) - eps).square().mean()"""

ANCESTRAL_DIVIDES_BY_ALPHA_BAR = """\
def ancestral_step(x_t, eps_hat, t, betas, alpha_bar, z):
    mean = (x_t - betas[t] / (1 - alpha_bar[t]).sqrt() * eps_hat) / alpha_bar[t].sqrt()  # should be sqrt(1 - beta_t)
    return mean + betas[t].sqrt() * z if t > 0 else mean


def ddim_step(x_t, eps_hat, ab_t, ab_s):
    x0_hat = (x_t - (1 - ab_t).sqrt() * eps_hat) / ab_t.sqrt()
    return ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps_hat"""

VELOCITY_FROM_DATA_TO_NOISE = """\
def flow_pair(x0, x1, t):
    t = t[:, None]
    return (1 - t) * x0 + t * x1, x0 - x1  # the velocity of the reversed path


def euler_sample(velocity, x, num_steps):
    h = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((len(x),), i * h, dtype=x.dtype)
        x = x + h * velocity(x, t)
    return x"""

RATIO_UPSIDE_DOWN = """\
def gradient_ratio(p):
    return p / (1 - p)  # minimax over non-saturating"""

MISTAKES = [
    # vae-tests: 1 + 1 + 2 visible, 1 + 1 + 1 hidden = 7. exp(logvar) as sigma fails the sample and its gradients
    # (2 of 7); the ELBO checks don't call reparameterise -> 2 * 5/7.
    # gan-tests: 1 + 1 + 1 visible, 2 + 1 hidden = 6. log(sigmoid) is right for small logits and fails at ±200
    # only (weight 2) -> 2 * 4/6.
    ({"vae-answer": VARIANCE_AS_SIGMA, "gan-answer": LOG_OF_SIGMOID}, 12 - 2 * (2 / 7) - 2 * (2 / 6)),
    # ddpm-tests: 1 + 1 + 1 visible, 2 + 1 hidden = 6. Without square roots only alpha_bar passes -> 2 * 1/6.
    ({"ddpm-answer": NO_SQUARE_ROOTS}, 12 - 2 * (5 / 6)),
    # sampler-tests: 1 + 1 visible, 1 + 2 + 1 hidden = 6. Dividing by sqrt(alpha_bar_t) equals sqrt(1 - beta_t)
    # only at t = 0: the visible ancestral check and the pair with t = 3 fail (3 of 6) -> 2 * 3/6.
    ({"sampler-answer": ANCESTRAL_DIVIDES_BY_ALPHA_BAR}, 12 - 2 * (3 / 6)),
    # flow-tests: 1 + 1 visible, 1 + 1 + 1 hidden = 5. The reversed velocity fails both flow_pair checks (2 of 5).
    # predict-tests: 4 predictions of weight 1. p / (1 - p) is right at p = 0.5 only -> 2 * 1/4.
    ({"flow-answer": VELOCITY_FROM_DATA_TO_NOISE, "predict-answer": RATIO_UPSIDE_DOWN},
     12 - 2 * (2 / 5) - 2 * (3 / 4)),
]
