# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 16: generative models
#
# This lab goes with notebook 16. You write the formulas at the heart of each family of generative models;
# each one is checked against an independent reference (PyTorch's distributions, its losses, or the formula
# computed another way).
#
# **Learning goals.** After this lab you can
# - sample a VAE's code with the reparameterisation trick and compute its loss, the negative ELBO;
# - write the discriminator's and both generators' GAN losses so that they stay finite for any logit;
# - noise images with the DDPM forward process in closed form and compute the ε-prediction loss;
# - take one ancestral (DDPM) and one DDIM sampling step;
# - build flow matching's straight-path training pairs and integrate its ODE with Euler steps;
# - predict how much stronger the non-saturating generator gradient is than the minimax one, before measuring.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab16_generative.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60–90 minutes. Every cell runs in a second on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 12 in all: VAE 2, GAN losses 2, DDPM noising and loss 2, sampler steps 2, flow matching 2,
# predicting the GAN gradients 2.
#
# **Shapes.** B batch, D features of one (flattened) image, L latent dimensions, T diffusion steps.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math

import torch
import torch.nn.functional as F

import dlcourse
from dlcourse.grading.checks import check_close, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# The prediction's test switches autograd off while it calls your function: derive the ratio, don't measure it.
AUTOGRAD = ((torch.autograd, "grad"), (torch.Tensor, "backward"))
NO_AUTOGRAD = "derive the ratio on paper: autograd is switched off while the tests call your function"


def _randn(seed, *shape, dtype=torch.float32):
    """A seeded standard normal tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# %% [markdown] nbgrader={"grade": false, "grade_id": "vae-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the reparameterisation trick and the ELBO (2 points)
#
# A VAE's encoder outputs, for each image, the mean `mu` and the log-variance `logvar` (both `(B, L)`) of a
# diagonal Gaussian $q(z\mid x)$. Its decoder outputs `x_hat` `(B, D)`, the mean of
# $p(x\mid z) = \mathcal N(\hat x, \sigma_x^2 I)$.
#
# - `reparameterise(mu, logvar, eps)`: the sample $z = \mu + \sigma\,\varepsilon$ for the given standard
#   normal `eps` `(B, L)`, differentiable in `mu` and `logvar` (note: `logvar` is $\log\sigma^2$).
# - `negative_elbo(x, x_hat, mu, logvar, sigma_x, beta=1.0)`: the loss a (β-)VAE minimises, averaged over the
#   batch: $-\log p(x\mid z) + \beta\,\mathrm{KL}\big(q(z\mid x)\,\Vert\,\mathcal N(0, I)\big)$, where
#   $\log p(x\mid z)$ is the full Gaussian log-density of `x` `(B, D)` (normalising constant included) and the KL
#   is in closed form, summed over the latent dimensions. A float (or 0-dim tensor), in nats.
#
# Use tensor operations; `torch.distributions` is what the tests compare against.

# %% nbgrader={"grade": false, "grade_id": "vae-answer", "locked": false, "schema_version": 3, "solution": true}
def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """mu, logvar, eps: (B, L). Returns z = mu + sigma * eps (B, L)."""
    ### BEGIN SOLUTION
    return mu + (0.5 * logvar).exp() * eps
    ### END SOLUTION


def negative_elbo(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  sigma_x: float, beta: float = 1.0) -> torch.Tensor:
    """x, x_hat: (B, D); mu, logvar: (B, L). Returns the batch mean of -log p(x|z) + beta * KL, a 0-dim tensor."""
    ### BEGIN SOLUTION
    D = x.shape[-1]
    log_lik = -0.5 * (x - x_hat).square().sum(-1) / sigma_x ** 2 - 0.5 * D * math.log(2 * math.pi * sigma_x ** 2)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return (-log_lik + beta * kl).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "vae-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _reference_elbo(x, x_hat, mu, logvar, sigma_x, beta=1.0):
    """The same loss from torch.distributions."""
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    log_lik = torch.distributions.Normal(x_hat, sigma_x).log_prob(x).sum(-1)
    return (-log_lik + beta * kl).mean()


_mu, _logvar, _eps = _randn(0, 4, 3), _randn(1, 4, 3), _randn(2, 4, 3)
check_close("reparameterise: mu + exp(logvar / 2) * eps", reparameterise(_mu, _logvar, _eps),
            expected=_mu + (0.5 * _logvar).exp() * _eps, atol=1e-6,
            hint="logvar is log(sigma²), so sigma = exp(logvar / 2)")
_mu_g = _mu.clone().requires_grad_(True)
_lv_g = _logvar.clone().requires_grad_(True)
reparameterise(_mu_g, _lv_g, _eps).sum().backward()
check_close("gradients of sum(z) with respect to mu and logvar", [_mu_g.grad, _lv_g.grad],
            expected=[torch.ones(4, 3), 0.5 * (0.5 * _logvar).exp() * _eps], atol=1e-6,
            hint="z must be computed from mu and logvar with differentiable tensor operations")
_x, _x_hat = _randn(3, 4, 10), _randn(4, 4, 10)
check_close("negative ELBO, sigma_x = 0.5", negative_elbo(_x, _x_hat, _mu, _logvar, 0.5),
            expected=_reference_elbo(_x, _x_hat, _mu, _logvar, 0.5), rtol=1e-5, weight=2,
            hint="-log p(x|z) = |x - x_hat|²/(2 sigma_x²) + D/2 log(2 pi sigma_x²) per image; KL = 1/2 sum(mu² + "
                 "sigma² - 1 - log sigma²) over the latent dimensions; then the mean over the batch")
print("VAE: visible tests passed")

### BEGIN HIDDEN TESTS
_mu, _logvar = _randn(5, 7, 2, dtype=torch.float64), _randn(6, 7, 2, dtype=torch.float64)
_x, _x_hat = _randn(7, 7, 5, dtype=torch.float64), _randn(8, 7, 5, dtype=torch.float64)
check_close("negative ELBO with beta = 4 and sigma_x = 1, float64",
            negative_elbo(_x, _x_hat, _mu, _logvar, 1.0, beta=4.0),
            expected=_reference_elbo(_x, _x_hat, _mu, _logvar, 1.0, beta=4.0), rtol=1e-9,
            hint="multiply the KL (only) by beta")
check_close("the KL alone: x_hat = x, compared with sigma_x = 1", negative_elbo(_x, _x, _mu, _logvar, 1.0)
            - 0.5 * 5 * math.log(2 * math.pi), expected=_reference_elbo(_x, _x, _mu, _logvar, 1.0)
            - 0.5 * 5 * math.log(2 * math.pi), rtol=1e-9,
            hint="KL(N(mu, sigma²) || N(0, 1)) = 1/2 (mu² + sigma² - 1 - log sigma²), summed over latent dimensions")
_mu_g = _mu.clone().requires_grad_(True)
negative_elbo(_x, _x_hat, _mu_g, _logvar, 0.3).backward()
check_close("gradient of the negative ELBO with respect to mu", _mu_g.grad, expected=_mu / 7, rtol=1e-9,
            hint="the KL's gradient in mu is mu, divided by B for the batch mean")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "gan-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: GAN losses (2 points)
#
# The discriminator outputs a **logit** $\ell$ per image; $D = \sigma(\ell)$ is its probability that the image
# is real. Write, each as a batch mean (a 0-dim tensor):
#
# - `discriminator_loss(real_logits, fake_logits)`: the binary cross-entropy of calling real images real and
#   fakes fake, $-\log D(x) - \log(1 - D(G(z)))$, each of the two terms averaged over its own batch;
# - `generator_loss(fake_logits, kind)`: for `kind="minimax"` the generator minimises $\log(1 - D(G(z)))$;
#   for `kind="non-saturating"` it minimises $-\log D(G(z))$.
#
# All three must stay **finite, with finite gradients, for logits of any size** (the tests use ±200): don't
# take the log of a sigmoid that rounded to 0 or 1. `F.logsigmoid` and `F.binary_cross_entropy_with_logits`
# are both allowed.

# %% nbgrader={"grade": false, "grade_id": "gan-answer", "locked": false, "schema_version": 3, "solution": true}
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """real_logits (B1,), fake_logits (B2,). Returns mean(-log D(x)) + mean(-log(1 - D(G(z))))."""
    ### BEGIN SOLUTION
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()    # 1 - sigma(l) = sigma(-l)
    ### END SOLUTION


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """fake_logits (B,). kind "minimax": mean(log(1 - D(G(z)))); "non-saturating": mean(-log D(G(z)))."""
    ### BEGIN SOLUTION
    if kind == "minimax":
        return F.logsigmoid(-fake_logits).mean()
    if kind == "non-saturating":
        return -F.logsigmoid(fake_logits).mean()
    raise ValueError(f"unknown kind {kind!r}")
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gan-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def _grad_of(f, logits):
    """(value, gradient) of f at logits."""
    logits = logits.detach().clone().requires_grad_(True)
    value = f(logits)
    return value.detach(), torch.autograd.grad(value, logits)[0]


_real, _fake = _randn(10, 6), _randn(11, 5)
check_close("discriminator loss", discriminator_loss(_real, _fake), expected=_bce(_real, 1) + _bce(_fake, 0),
            atol=1e-6, hint="-log sigma(l) on the real logits, -log(1 - sigma(l)) on the fake ones, each averaged")
check_close("minimax generator loss", generator_loss(_fake, "minimax"), expected=-_bce(_fake, 0), atol=1e-6,
            hint="log(1 - D(G(z))): the discriminator's loss on fakes, with the opposite sign")
check_close("non-saturating generator loss", generator_loss(_fake, "non-saturating"), expected=_bce(_fake, 1),
            atol=1e-6, hint="-log D(G(z)): cross-entropy of calling the fakes real")
print("GAN losses: visible tests passed")

### BEGIN HIDDEN TESTS
_big = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0])
check_close("all three at logits ±200, ±30 and 0: values and gradients",
            [_grad_of(lambda l: discriminator_loss(l, l), _big), _grad_of(lambda l: generator_loss(l, "minimax"), _big),
             _grad_of(lambda l: generator_loss(l, "non-saturating"), _big)],
            expected=[_grad_of(lambda l: _bce(l, 1) + _bce(l, 0), _big), _grad_of(lambda l: -_bce(l, 0), _big),
                      _grad_of(lambda l: _bce(l, 1), _big)], rtol=1e-5, atol=1e-6, weight=2,
            hint="log(sigmoid(l)) is -inf once sigmoid(l) rounds to 0: use F.logsigmoid(l), and log(1 - sigma(l)) "
                 "= logsigmoid(-l)")
_real, _fake = _randn(12, 3, dtype=torch.float64), _randn(13, 8, dtype=torch.float64)
check_close("batches of different sizes, float64", discriminator_loss(_real, _fake),
            expected=_bce(_real, 1) + _bce(_fake, 0), rtol=1e-12,
            hint="average each term over its own batch")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "ddpm-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: DDPM noising and loss (2 points)
#
# The forward process adds noise with variances `betas` $\beta_1, \dots, \beta_T$ (a `(T,)` tensor; index
# `t` of a tensor is step $t + 1$). Write
#
# - `alpha_bar(betas)`: the `(T,)` tensor $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$;
# - `q_sample(x0, t, eps, alpha_bar)`: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
#   for images `x0` `(B, D)`, **one step index per image** `t` `(B,)` (int64, 0-based into `alpha_bar`) and
#   noise `eps` `(B, D)`;
# - `ddpm_loss(model, x0, t, eps, alpha_bar)`: the ε-prediction loss, the mean squared error between
#   `model(x_t, t)` and `eps`, averaged over every element.
#
# Keep the dtype of `x0` (the tests use float64).

# %% nbgrader={"grade": false, "grade_id": "ddpm-answer", "locked": false, "schema_version": 3, "solution": true}
def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """betas (T,) -> cumulative products of 1 - beta (T,)."""
    ### BEGIN SOLUTION
    return torch.cumprod(1 - betas, dim=0)
    ### END SOLUTION


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0, eps: (B, D); t: (B,) step indices; alpha_bar: (T,). Returns x_t (B, D)."""
    ### BEGIN SOLUTION
    ab = alpha_bar[t][:, None]                          # (B, 1): one noise level per image
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    ### END SOLUTION


def ddpm_loss(model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The mean squared error between model(x_t, t) and eps."""
    ### BEGIN SOLUTION
    ab = alpha_bar[t][:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    return (model(x_t, t) - eps).square().mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ddpm-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _iterate(x0, betas, t, noises):
    """x_{t+1} by running the forward process one step at a time (noises: one (D,) tensor per step)."""
    x = x0.clone()
    for s in range(t + 1):
        x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * noises[s]
    return x


_betas = torch.linspace(1e-3, 0.2, 12, dtype=torch.float64)
_ab = torch.tensor([math.prod(1 - b for b in _betas[: s + 1].tolist()) for s in range(12)], dtype=torch.float64)
check_close("alpha_bar of 12 steps", alpha_bar(_betas), expected=_ab, rtol=1e-12,
            hint="the running product of 1 - beta (torch.cumprod), not of beta")
# the closed form has the same mean and variance as iterating: x_t = c x0 + a sum of independent noises
_x0 = _randn(20, 3, 5, dtype=torch.float64)
_t = torch.tensor([0, 5, 11])
_eps = _randn(21, 3, 5, dtype=torch.float64)
check_close("q_sample with a different step per image", q_sample(_x0, _t, _eps, _ab),
            expected=_ab[_t, None].sqrt() * _x0 + (1 - _ab[_t, None]).sqrt() * _eps, rtol=1e-12,
            hint="index alpha_bar with t, then add a dimension so that (B, 1) broadcasts against (B, D)")


class _LinearModel(torch.nn.Module):
    """A fixed 'denoiser' that depends on x_t and t."""

    def forward(self, x, t):
        return 0.5 * x + 0.1 * t[:, None].to(x.dtype)


check_close("ddpm_loss with a fixed model", ddpm_loss(_LinearModel(), _x0, _t, _eps, _ab),
            expected=F.mse_loss(_LinearModel()(_ab[_t, None].sqrt() * _x0 + (1 - _ab[_t, None]).sqrt() * _eps, _t),
                                _eps), rtol=1e-12,
            hint="noise x0 to step t in closed form, then the mean squared error of model(x_t, t) against eps")
print("DDPM: visible tests passed")

### BEGIN HIDDEN TESTS
# one noise per step, iterated, equals the closed form with the noises combined into one of the same variance
_noises = _randn(22, 12, 4, dtype=torch.float64)
_x0 = _randn(23, 1, 4, dtype=torch.float64)[0]
_t_check = 7
_x_iter = _iterate(_x0, _betas, _t_check, _noises)
_combined = (_x_iter - _ab[_t_check].sqrt() * _x0) / (1 - _ab[_t_check]).sqrt()     # the equivalent single noise
check_close("closed form equals iterating 8 steps (with the equivalent noise)",
            q_sample(_x0[None], torch.tensor([_t_check]), _combined[None], alpha_bar(_betas))[0],
            expected=_x_iter, rtol=1e-10, weight=2,
            hint="x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps with alpha_bar the cumulative product")
_eps = _randn(24, 3, 4, dtype=torch.float64)
_x0 = _randn(25, 3, 4, dtype=torch.float64)
_t = torch.tensor([11, 0, 3])
check_close("ddpm_loss keeps float64 and uses each image's own step",
            [str(ddpm_loss(_LinearModel(), _x0, _t, _eps, _ab).dtype), ddpm_loss(_LinearModel(), _x0, _t, _eps, _ab)],
            expected=["torch.float64", F.mse_loss(_LinearModel()(_ab[_t, None].sqrt() * _x0
                                                                  + (1 - _ab[_t, None]).sqrt() * _eps, _t), _eps)],
            rtol=1e-12, hint="the loss compares the model's output with eps (not with x0), averaged over all elements")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sampler-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: one sampler step (2 points)
#
# Sampling runs the process backwards, with a network's noise prediction `eps_hat` `(B, D)` at the current
# `x_t` `(B, D)`. Here `t` is a Python int, a 0-based index into `betas` and `alpha_bar` (both `(T,)`).
#
# - `ancestral_step(x_t, eps_hat, t, betas, alpha_bar, z)`: DDPM's step from index `t` to `t - 1`,
#   $x_{t-1} = \frac{1}{\sqrt{1-\beta_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\hat\varepsilon\big)
#   + \sqrt{\beta_t}\,z$ with the given standard normal `z` `(B, D)`, except that the last step (`t == 0`)
#   adds no noise.
# - `ddim_step(x_t, eps_hat, ab_t, ab_s)`: the deterministic DDIM jump from a step with $\bar\alpha_t$ = `ab_t`
#   to an earlier one with $\bar\alpha_s$ = `ab_s` (0-dim tensors): estimate the clean image
#   $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ and return
#   $\sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s}\,\hat\varepsilon$.

# %% nbgrader={"grade": false, "grade_id": "sampler-answer", "locked": false, "schema_version": 3, "solution": true}
def ancestral_step(x_t: torch.Tensor, eps_hat: torch.Tensor, t: int, betas: torch.Tensor,
                   alpha_bar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One DDPM step: x_t (B, D) at index t -> x at index t - 1 (B, D); no noise when t == 0."""
    ### BEGIN SOLUTION
    mean = (x_t - betas[t] / (1 - alpha_bar[t]).sqrt() * eps_hat) / (1 - betas[t]).sqrt()
    return mean + betas[t].sqrt() * z if t > 0 else mean
    ### END SOLUTION


def ddim_step(x_t: torch.Tensor, eps_hat: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM jump from alpha_bar = ab_t to ab_s, through the predicted clean image."""
    ### BEGIN SOLUTION
    x0_hat = (x_t - (1 - ab_t).sqrt() * eps_hat) / ab_t.sqrt()
    return ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps_hat
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sampler-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _posterior_mean(x_t, x0, t, betas, ab):
    """The mean of q(x_{t-1} | x_t, x0), the form DDPM's paper derives (the ancestral step's mean, by another route)."""
    ab_prev = ab[t - 1] if t > 0 else torch.ones((), dtype=ab.dtype)
    return (ab_prev.sqrt() * betas[t] / (1 - ab[t]) * x0
            + (1 - betas[t]).sqrt() * (1 - ab_prev) / (1 - ab[t]) * x_t)


_betas = torch.linspace(1e-2, 0.3, 10, dtype=torch.float64)
_ab = torch.cumprod(1 - _betas, 0)
_x0, _eps, _z = (_randn(s, 4, 6, dtype=torch.float64) for s in (30, 31, 32))
_t = 6
_x_t = _ab[_t].sqrt() * _x0 + (1 - _ab[_t]).sqrt() * _eps
check_close("ancestral step with the true noise: the posterior mean plus sqrt(beta_t) z",
            ancestral_step(_x_t, _eps, _t, _betas, _ab, _z),
            expected=_posterior_mean(_x_t, _x0, _t, _betas, _ab) + _betas[_t].sqrt() * _z, rtol=1e-10,
            hint="divide by sqrt(1 - beta_t) = sqrt(alpha_t), not by sqrt(alpha_bar_t); noise scale sqrt(beta_t)")
check_close("DDIM jump with the true noise lands on the forward process at the earlier step",
            ddim_step(_x_t, _eps, _ab[_t], _ab[2]), expected=_ab[2].sqrt() * _x0 + (1 - _ab[2]).sqrt() * _eps,
            rtol=1e-10, hint="x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); then noise x0_hat back to ab_s with "
                             "the same eps")
print("sampler steps: visible tests passed")

### BEGIN HIDDEN TESTS
_x_1 = _ab[0].sqrt() * _x0 + (1 - _ab[0]).sqrt() * _eps
check_close("the last ancestral step (t = 0) adds no noise and returns x0 for the true noise",
            ancestral_step(_x_1, _eps, 0, _betas, _ab, _z), expected=_x0, rtol=1e-10,
            hint="at t == 0 return the mean only")
_eps_hat = _randn(33, 4, 6, dtype=torch.float64)     # a wrong prediction: the steps are still the formulas
check_close("ancestral and DDIM steps with an imperfect prediction",
            [ancestral_step(_x_t, _eps_hat, 3, _betas, _ab, _z), ddim_step(_x_t, _eps_hat, _ab[8], _ab[1])],
            expected=[(_x_t - _betas[3] / (1 - _ab[3]).sqrt() * _eps_hat) / (1 - _betas[3]).sqrt()
                      + _betas[3].sqrt() * _z,
                      _ab[1].sqrt() * (_x_t - (1 - _ab[8]).sqrt() * _eps_hat) / _ab[8].sqrt()
                      + (1 - _ab[1]).sqrt() * _eps_hat], rtol=1e-10, weight=2,
            hint="use the given eps_hat, betas and alpha_bar at index t only")
check_close("a DDIM jump to alpha_bar = 1 returns the predicted clean image",
            ddim_step(_x_t, _eps, _ab[_t], torch.tensor(1.0, dtype=torch.float64)), expected=_x0, rtol=1e-10,
            hint="with ab_s = 1 the result is x0_hat")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flow-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: flow matching (2 points)
#
# Flow matching walks the straight line from noise $x_0$ to an image $x_1$ and learns its velocity.
#
# - `flow_pair(x0, x1, t)`: for noise `x0` and images `x1` (both `(B, D)`) and times `t` `(B,)` in $[0, 1]$,
#   return `(x_t, v)`: the point $x_t = (1 - t)\,x_0 + t\,x_1$ on each line and its velocity
#   $v = \mathrm dx_t/\mathrm dt$, the regression target.
# - `euler_sample(velocity, x, num_steps)`: integrate $\mathrm dx/\mathrm dt$ = `velocity(x, t)` from $t = 0$
#   to $t = 1$ in `num_steps` equal Euler steps, starting at `x` `(B, D)`; `velocity` takes `x` `(B, D)` and
#   `t` `(B,)` (the same time for every row) and returns `(B, D)`. Return the final `x`; don't change the input.

# %% nbgrader={"grade": false, "grade_id": "flow-answer", "locked": false, "schema_version": 3, "solution": true}
def flow_pair(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x0, x1: (B, D); t: (B,). Returns (x_t, target velocity), both (B, D)."""
    ### BEGIN SOLUTION
    t = t[:, None]
    return (1 - t) * x0 + t * x1, x1 - x0
    ### END SOLUTION


def euler_sample(velocity, x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Euler integration of dx/dt = velocity(x, t) from t = 0 to 1 in num_steps steps."""
    ### BEGIN SOLUTION
    h = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((len(x),), i * h, dtype=x.dtype)
        x = x + h * velocity(x, t)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flow-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_x0, _x1 = _randn(40, 5, 3, dtype=torch.float64), _randn(41, 5, 3, dtype=torch.float64)
_t = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
_result = flow_pair(_x0, _x1, _t)
assert isinstance(_result, tuple) and len(_result) == 2, "flow_pair should return a pair (x_t, v)"
check_close("flow_pair: the point on each line and its velocity", list(_result),
            expected=[(1 - _t[:, None]) * _x0 + _t[:, None] * _x1, _x1 - _x0], rtol=1e-12,
            hint="x_t = (1 - t) x0 + t x1 with t as a (B, 1) column; its derivative in t is x1 - x0 (data minus noise)")


def _record(calls):
    """A velocity field dx/dt = -x + t that records the times it was called at."""
    def velocity(x, t):
        calls.append(t.tolist())
        return -x + t[:, None]
    return velocity


_calls = []
_start = _randn(42, 2, 3, dtype=torch.float64)
_out = euler_sample(_record(_calls), _start, 4)
_x = _start.clone()
for _i in range(4):
    _x = _x + 0.25 * (-_x + 0.25 * _i)
check_close("4 Euler steps of dx/dt = -x + t, and the times it evaluated", [_out, _calls],
            expected=[_x, [[0.0, 0.0], [0.25, 0.25], [0.5, 0.5], [0.75, 0.75]]], rtol=1e-12,
            hint="step size h = 1 / num_steps; evaluate at t = 0, h, 2h, ... (the start of each step), never at t = 1")
print("flow matching: visible tests passed")

### BEGIN HIDDEN TESTS
# for a single target image the exact field is (x1 - x) / (1 - t): one Euler step lands on it
_target = _randn(43, 1, 3, dtype=torch.float64)
_noise = _randn(44, 6, 3, dtype=torch.float64)
_noise_copy = _noise.clone()
check_close("one Euler step of the exact field of one image reaches it; the input is unchanged",
            [euler_sample(lambda x, t: (_target - x) / (1 - t[:, None]), _noise, 1), _noise],
            expected=[_target.expand(6, 3), _noise_copy], rtol=1e-12,
            hint="x + h * velocity(x, 0) with h = 1; don't update x in place")
_calls = []
check_close("100 Euler steps converge to the exact solution of dx/dt = -x + t",
            euler_sample(_record(_calls), _start, 100),
            expected=_start * math.exp(-1) + math.exp(-1), rtol=0.01, atol=0.01,
            hint="integrate from t = 0 to t = 1 in num_steps equal steps")
check_close("flow_pair in float32 with t of shape (B,)", list(flow_pair(_x0.float(), _x1.float(), _t.float())),
            expected=[(1 - _t[:, None].float()) * _x0.float() + _t[:, None].float() * _x1.float(),
                      (_x1 - _x0).float()], rtol=1e-6)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: predict, then measure — why the non-saturating loss (2 points)
#
# Early in training the discriminator spots fakes easily: $D(G(z)) = p$ is small. The generator learns from
# the gradient of its loss with respect to the discriminator's logit $\ell$ on its fake, where
# $p = \sigma(\ell)$.
#
# **Predict** `gradient_ratio(p)`: the size of that gradient for the non-saturating loss $-\log D(G(z))$
# divided by its size for the minimax loss $\log(1 - D(G(z)))$, as a function of $p$ — work it out on paper
# (autograd is switched off while the test calls your function). The test then measures both gradients with
# autograd at several values of $p$. Tolerance: 1% relative.

# %% nbgrader={"grade": false, "grade_id": "predict-answer", "locked": false, "schema_version": 3, "solution": true}
def gradient_ratio(p: float) -> float:
    """|d(-log sigma(l))/dl| / |d(log(1 - sigma(l)))/dl| at the logit l where sigma(l) = p."""
    ### BEGIN SOLUTION
    return (1 - p) / p          # the gradients are -(1 - sigma(l)) and -sigma(l)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "predict-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _measured_ratio(p: float) -> float:
    """Both generator losses' gradients with respect to the logit, by autograd, at sigma(logit) = p."""
    logit = torch.tensor(math.log(p / (1 - p)), dtype=torch.float64, requires_grad=True)
    (g_ns,) = torch.autograd.grad(-F.logsigmoid(logit), logit)
    (g_mm,) = torch.autograd.grad(F.logsigmoid(-logit), logit)
    return abs(g_ns.item()) / abs(g_mm.item())


def _predicted(p):
    with forbid(AUTOGRAD, NO_AUTOGRAD):
        return gradient_ratio(p)


check_prediction("D(G(z)) = 0.01", _predicted(0.01), expected=_measured_ratio(0.01), rtol=0.01,
                 hint="differentiate log(1 - sigma(l)) and -log sigma(l) in l, using sigma' = sigma (1 - sigma)")
check_prediction("D(G(z)) = 0.5", _predicted(0.5), expected=_measured_ratio(0.5), rtol=0.01)
print("prediction: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("D(G(z)) = 0.001", _predicted(0.001), expected=_measured_ratio(0.001), rtol=0.01)
check_prediction("D(G(z)) = 0.9", _predicted(0.9), expected=_measured_ratio(0.9), rtol=0.01,
                 hint="the ratio is below 1 once the discriminator is fooled")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-plot", "locked": true, "schema_version": 3, "solution": false}
# How the two gradients compare as the discriminator goes from certain (p → 0) to fooled (p → 1): the ratio
# from autograd, next to your prediction.

# %% nbgrader={"grade": false, "grade_id": "predict-show", "locked": true, "schema_version": 3, "solution": false}
for _p in (0.001, 0.01, 0.1, 0.5, 0.9):
    print(f"p = {_p:<5}: measured ratio {_measured_ratio(_p):10.2f}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A VAE samples its code as $z = \mu + e^{\log\sigma^2/2}\varepsilon$, so gradients reach the encoder; its
#   loss is the negative ELBO, a reconstruction term plus β times a closed-form KL.
# - GAN losses are cross-entropies on logits; `logsigmoid` keeps them finite. Where the discriminator wins
#   ($p \to 0$), the minimax generator's gradient vanishes and the non-saturating one's does not.
# - DDPM noises in closed form with $\bar\alpha_t = \prod(1-\beta_s)$ and trains by regressing the noise;
#   an ancestral step removes predicted noise and adds a little fresh noise; a DDIM step jumps through the
#   predicted clean image, deterministically and as far as you like.
# - Flow matching regresses the constant velocity $x_1 - x_0$ of straight lines and samples with Euler steps.
#
# ## Further exercises (not graded)
#
# 1. Write `heun_sample` and compare it with `euler_sample` on $\mathrm dx/\mathrm dt = -x + t$ for 1–16
#    steps: plot the error against the number of velocity evaluations.
# 2. Check with Monte Carlo that `q_sample` and iterating the forward process give the same distribution
#    (means and variances over 10,000 noisings).
# 3. Write the stochastic DDIM step (η > 0) and check that η = 1 has the variance of the ancestral step.
