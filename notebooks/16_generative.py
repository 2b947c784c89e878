# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 16 · Generative models
#
# A classifier maps an image to a label. A **generative model** learns the distribution of the images
# themselves, so that it can draw new ones. This notebook builds the five families that matter today, all on
# the same data and measured with the same yardstick: autoencoders and variational autoencoders (VAE),
# generative adversarial networks (GAN), denoising diffusion (DDPM, DDIM) and flow matching.
#
# **Learning goals**
# - Train an autoencoder and a VAE: the reparameterisation trick, the ELBO, the closed-form Gaussian KL
#   (checked against a Monte-Carlo estimate), β-VAE and posterior collapse, walks through the latent space.
# - Train a DCGAN-style GAN; measure why the non-saturating generator loss beats the minimax one at the start;
#   stabilise the discriminator with spectral normalisation (checked against PyTorch's).
# - Noise images with the DDPM forward process in closed form (equal to iterating it), train an ε-predictor,
#   and sample with ancestral sampling and with DDIM in far fewer steps; compare linear and cosine schedules.
# - Train a flow-matching (rectified flow) model on straight paths and sample it with Euler and Heun steps.
# - Compute a Fréchet distance from scratch on a classifier's features, and compare every model by quality,
#   training time and sampling cost.
#
# **Prerequisites:** notebooks 01–05 (training loops, CNNs, Adam); Gaussian densities; the chain rule.
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU (scikit-learn's 8×8 digits, which
# ship with scikit-learn: no download); at `full` the same models, wider, train longer on a GPU on
# Fashion-MNIST (28×28, downloaded with checksums). The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import itertools
import math
import time
import warnings

import ipywidgets as widgets
import matplotlib.pyplot as plt
import scipy.linalg
import torch
import torch.nn.functional as F
from IPython.display import display
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import dlcourse

cfg = dlcourse.setup(seed=0)
device = cfg.device
if device.type == "cpu":
    torch.set_num_threads(1)    # these layers are tiny: a second thread costs more in synchronisation than it saves
t_start = time.perf_counter()

steps = cfg.pick(smoke=100, small=2000, full=20_000)       # optimizer steps per generative model
width = cfg.pick(smoke=64, small=256, full=1024)           # hidden width of the MLPs
batch_size = cfg.pick(smoke=64, small=128, full=256)
denoiser_steps = cfg.pick(smoke=100, small=8000, full=30_000)   # DDPM and flow matching: cheap steps, more of them
T = cfg.pick(smoke=200, small=1000, full=1000)             # diffusion steps

# %% [markdown]
# ## 1. Data and a training loop
# At smoke and small scale: scikit-learn's 1,797 handwritten digits (8×8, grey); at full scale Fashion-MNIST.
# Pixels are scaled to $[-1, 1]$, the range of the GAN's `tanh` output and the natural scale for adding
# unit-variance noise. Every model below trains on random batches with one small loop, for `steps` steps
# (autoencoders, GANs) or `denoiser_steps` (DDPM and flow matching, whose MLP steps are cheap and which must learn
# every noise level); `timed` synchronises the GPU before reading the clock.

# %%
splits = dlcourse.data.real_or_offline(cfg, "fashion-mnist", n_val=2000, n_test=2000,
                                       offline=lambda: dlcourse.data.digits(seed=cfg.seed))


def stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a TensorDataset's images, scaled to [-1, 1], and its labels, on the device."""
    X, y = dataset.tensors
    return (2 * X - 1).to(device), y.to(device)


X_train, y_train = stacked(splits.train)
X_eval = torch.cat([stacked(splits.val)[0], stacked(splits.test)[0]])    # held out: the Fréchet reference
C, S = X_train.shape[1], X_train.shape[-1]
D = C * S * S                                                            # pixels per image
print(f"{splits}: train {tuple(X_train.shape)}, evaluation set {tuple(X_eval.shape)}, D = {D}")


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    """(fn's result, seconds), with the GPU synchronised before and after."""
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - t0


def train(loss_fn, params, data=(X_train,), num_steps=steps, lr=1e-3, seed=0) -> tuple[list[float], float]:
    """Adam on random batches of ``data`` for ``num_steps`` steps; returns (losses, seconds)."""
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []

    def run():
        for _ in range(num_steps):
            idx = torch.randint(len(data[0]), (batch_size,), generator=gen).to(device)
            loss = loss_fn(*(t[idx] for t in data))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    return timed(run)


def mlp(d_in: int, d_out: int, hidden: int = width, depth: int = 3) -> nn.Sequential:
    layers, d = [], d_in
    for _ in range(depth - 1):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, d_out))


def show(images: torch.Tensor, title: str, ncols: int = 16):
    """Images in [-1, 1], (N, D) or (N, C, S, S), tiled into one picture (one imshow: fast for many images)."""
    x = ((images.detach().float().reshape(-1, C, S, S).clamp(-1, 1) + 1) / 2).cpu()
    n, rows = len(x), -(-len(x) // ncols)
    x = torch.cat([x, torch.ones(rows * ncols - n, C, S, S)])              # pad the last row with white
    x = F.pad(x, (1, 1, 1, 1), value=1.0)                                   # a white border around each image
    tiles = x.reshape(rows, ncols, C, S + 2, S + 2).permute(0, 3, 1, 4, 2).reshape(rows * (S + 2), -1, C)
    fig, ax = plt.subplots(figsize=(0.45 * ncols * max(S, 8) / 8, 0.45 * rows * max(S, 8) / 8 + 0.3))
    ax.imshow(tiles.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    plt.close(fig)
    return fig


show(X_train[:32], "training images")

# %% [markdown]
# ## 2. Measuring samples: a Fréchet distance
# Before building generators we need a number for "how good are these samples". The **Fréchet distance**
# compares two sets of images through a feature extractor: fit a Gaussian to each set's features and compute
# the 2-Wasserstein distance between the Gaussians,
# $$ d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\!\big(\Sigma_1 + \Sigma_2
#        - 2\,(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\big). $$
# The FID of the literature uses an Inception network trained on ImageNet; we have no such network (and it
# would see 8×8 digits badly), so we train a small CNN classifier on our data and use its penultimate layer.
# **Our numbers are therefore comparable with each other, never with published FIDs.** Lower is better; even
# two sets of real images are at a distance above 0 because of sampling noise, which the "real vs real" row
# of the final table shows.
#
# The matrix square roots are of symmetric positive semi-definite matrices, so an eigendecomposition gives them
# exactly; the usual formula with `scipy.linalg.sqrtm(Σ1 Σ2)` (a non-symmetric product with the same trace of
# its square root) is the check.

# %%
class Classifier(nn.Module):
    """A small CNN for C×S×S images; ``features`` is its 64-dimensional penultimate layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(C, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, C, S, S))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


torch.manual_seed(cfg.seed)
classifier = Classifier(len(splits.classes)).to(device)
clf_losses, _ = train(lambda x, y: F.cross_entropy(classifier(x), y), classifier.parameters(),
                      data=(X_train, y_train), num_steps=cfg.pick(smoke=80, small=800, full=4000), lr=2e-3)
classifier.eval().requires_grad_(False)
X_val, y_val = stacked(splits.val)
accuracy = (classifier(X_val).argmax(1) == y_val).float().mean().item()
print(f"feature classifier: validation accuracy {accuracy:.1%}")
assert accuracy > cfg.pick(smoke=0.7, small=0.9, full=0.8)


def sqrtm_psd(A: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, V = torch.linalg.eigh(A)
    return V @ torch.diag(w.clamp(min=0).sqrt()) @ V.T


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to features f1 (N1, F) and f2 (N2, F), in float64."""
    f1, f2 = f1.double().cpu(), f2.double().cpu()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    S1, S2 = torch.cov(f1.T), torch.cov(f2.T)
    root1 = sqrtm_psd(S1)
    cross = sqrtm_psd(root1 @ S2 @ root1)
    return ((mu1 - mu2).square().sum() + S1.trace() + S2.trace() - 2 * cross.trace()).item()


def frechet_scipy(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """The same with the usual formula: tr(S1 + S2 - 2 sqrtm(S1 S2)), sqrtm from SciPy."""
    a, b = f1.double().cpu().numpy(), f2.double().cpu().numpy()
    S1, S2 = torch.cov(torch.from_numpy(a).T).numpy(), torch.cov(torch.from_numpy(b).T).numpy()
    with warnings.catch_warnings():       # dead ReLU features make the covariances singular: sqrtm warns
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        cross = scipy.linalg.sqrtm(S1 @ S2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + S1.trace() + S2.trace() - 2 * cross.trace())


@torch.no_grad()
def fd(samples: torch.Tensor) -> float:
    """Fréchet distance of samples (N, D) or (N, C, S, S) to the held-out evaluation images."""
    return frechet_distance(classifier.features(samples.clamp(-1, 1)), classifier.features(X_eval))


n_eval = len(X_eval)
half = n_eval // 2
feats = classifier.features(X_eval)
for name, (a, b) in {"real vs real": (feats[:half], feats[half:]),
                     "real vs noise": (feats, classifier.features(torch.rand_like(X_eval) * 2 - 1))}.items():
    ours, theirs = frechet_distance(a, b), frechet_scipy(a, b)
    print(f"{name:>13}: ours {ours:10.4f}, with scipy.linalg.sqrtm {theirs:10.4f}")
    assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6)
fd_real = frechet_distance(feats[:half], feats[half:])
fd_noise = fd(torch.rand_like(X_eval) * 2 - 1)
assert fd_real < fd_noise / 10

# %% [markdown]
# ## 3. Autoencoders and the VAE
# An **autoencoder** squeezes each image through a small code $z$ and reconstructs it. It learns a compressed
# description of the data, but nothing says what a code *between* or *away from* the training codes decodes
# to, and nothing says which distribution to draw new codes from: it is not a generator by design. Below we try
# anyway, with codes drawn from a Gaussian with the spread of its training codes, and measure the result.
#
# A **variational autoencoder** makes the code random. The encoder outputs a Gaussian $q(z\mid x) =
# \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))$, the decoder a distribution $p(x\mid z)$, and training
# maximises the **evidence lower bound** on $\log p(x)$:
# $$ \mathrm{ELBO}(x) = \mathbb E_{z\sim q(z\mid x)}\big[\log p(x\mid z)\big]
#    - \mathrm{KL}\big(q(z\mid x)\,\Vert\,\mathcal N(0, I)\big) \le \log p(x). $$
# The KL term pulls every code distribution towards the prior $\mathcal N(0, I)$, so that after training a
# code drawn from the prior decodes to something like the data. For a diagonal Gaussian it has a closed form,
# $\tfrac12\sum_j(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)$, which we check against a Monte-Carlo average of
# $\log q(z) - \log p(z)$.
#
# **The reparameterisation trick.** Sampling $z$ is not differentiable in $\mu, \sigma$. Writing
# $z = \mu + \sigma\,\varepsilon$ with $\varepsilon \sim \mathcal N(0, I)$ moves the randomness into an input,
# and gradients flow through $\mu$ and $\sigma$. For $f(z) = z^2$, $\mathbb E f = \mu^2 + \sigma^2$, so the
# exact gradients are $2\mu$ and $2\sigma$: the cell below gets them back from samples.

# %%
def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over the last dimension."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)


torch.manual_seed(cfg.seed)
mu = torch.tensor([0.7, -1.2], requires_grad=True)
logvar = torch.tensor([-0.5, 0.8], requires_grad=True)
n_mc = 200_000
z = mu + (0.5 * logvar).exp() * torch.randn(n_mc, 2)                  # (n_mc, 2), reparameterised
z.square().mean(0).sum().backward()
sigma = (0.5 * logvar).exp().detach()
print(f"reparameterised gradient wrt mu {mu.grad.tolist()}, exact {(2 * mu).tolist()}")
assert torch.allclose(mu.grad, 2 * mu.detach(), atol=0.02)
assert torch.allclose(logvar.grad, sigma ** 2, atol=0.03)             # d(sigma²)/d(logvar) = sigma²

with torch.no_grad():
    log_q = torch.distributions.Normal(mu, sigma).log_prob(z).sum(-1)     # (n_mc,)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = log_q - log_p
    closed = gaussian_kl(mu, logvar).item()
    se = mc.std().item() / math.sqrt(n_mc)
print(f"KL closed form {closed:.4f}, Monte Carlo {mc.mean():.4f} ± {se:.4f} (one standard error)")
assert abs(mc.mean().item() - closed) < 4 * se
assert math.isclose(closed, torch.distributions.kl_divergence(
    torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 1.0)).sum().item(), rel_tol=1e-5)

# %% [markdown]
# Our decoder outputs the mean of a Gaussian $p(x\mid z) = \mathcal N(\hat x(z), \sigma_x^2 I)$ with a fixed
# $\sigma_x$, so $\log p(x\mid z) = -\lVert x - \hat x\rVert^2 / 2\sigma_x^2$ + a constant. The ELBO below is in
# nats per image (constant included). A β-VAE multiplies the KL by β; the autoencoder is the same network with
# the noise and the KL switched off.

# %%
latent = 8
sigma_x = 0.3


class VAE(nn.Module):
    def __init__(self, variational: bool = True) -> None:
        super().__init__()
        self.variational = variational
        self.encoder = mlp(D, 2 * latent)
        self.decoder = mlp(latent, D)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x.reshape(len(x), D)).chunk(2, dim=-1)       # (B, latent) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)                                                # (B, D)

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z) for one reparameterised z, KL) per image; the autoencoder has no noise and KL 0."""
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar) if self.variational else mu
        x_hat = self.decode(z)
        log_lik = (-0.5 * (x.reshape(len(x), D) - x_hat).square().sum(-1) / sigma_x ** 2
                   - 0.5 * D * math.log(2 * math.pi * sigma_x ** 2))
        kl = gaussian_kl(mu, logvar) if self.variational else torch.zeros_like(log_lik)
        return log_lik, kl

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(torch.randn(n, latent, generator=gen).to(device))


def vae_loss(model: VAE, beta: float = 1.0):
    def loss(x):
        log_lik, kl = model.elbo_terms(x)
        return -(log_lik - beta * kl).mean()
    return loss


results = {}          # method -> training seconds, sampler rows
torch.manual_seed(cfg.seed)
ae = VAE(variational=False).to(device)
ae_losses, ae_time = train(vae_loss(ae), ae.parameters())
torch.manual_seed(cfg.seed)
vae = VAE().to(device)
vae_losses, vae_time = train(vae_loss(vae), vae.parameters())
with torch.no_grad():
    log_lik, kl = vae.elbo_terms(X_eval)
    ae_mse = (ae.decode(ae.encode(X_eval)[0]) - X_eval.reshape(n_eval, D)).square().mean().item()
    vae_mse = (vae.decode(vae.encode(X_eval)[0]) - X_eval.reshape(n_eval, D)).square().mean().item()
print(f"VAE on held-out images: ELBO {(log_lik - kl).mean():.1f} nats = log-likelihood {log_lik.mean():.1f} "
      f"- KL {kl.mean():.1f}")
print(f"reconstruction MSE: autoencoder {ae_mse:.4f}, VAE (from the mean code) {vae_mse:.4f}, "
      f"predicting the mean image {(X_eval - X_train.mean(0)).square().mean():.4f}")
assert ae_losses[-1] < ae_losses[0] / 2 and vae_losses[-1] < vae_losses[0]
assert ae_mse < (X_eval - X_train.mean(0)).square().mean().item()

gen = torch.Generator().manual_seed(cfg.seed)
ae_scale = ae.encode(X_train)[0].std(0).detach()                          # the spread of the codes it uses
with torch.no_grad():
    x_ae, t_ae = timed(lambda: ae.decode(torch.randn(n_eval, latent, generator=gen).to(device) * ae_scale))
    x_vae, t_vae = timed(lambda: vae.sample(n_eval, gen))
samples = {"autoencoder (random codes)": x_ae, "VAE": x_vae}              # method -> samples shown at the end
results["autoencoder"] = (ae_time, [("random codes", 1, x_ae, t_ae)])
results["VAE"] = (vae_time, [("prior sample", 1, x_vae, t_vae)])
for name, x in samples.items():
    print(f"{name}: Fréchet distance {fd(x):.2f}")
show(torch.cat([samples["autoencoder (random codes)"][:16], samples["VAE"][:16]]),
     "top: autoencoder decoding random codes · bottom: VAE samples")

# %% [markdown]
# **Posterior collapse.** With a large β the KL term wins: the encoder makes most $q(z_j\mid x)$ equal to the
# prior, whatever $x$, and the decoder learns to ignore those dimensions. A dimension is *active* if its KL,
# averaged over the data, is above 0.01 nats. (Collapse also happens at β = 1 when the decoder is strong enough
# to model the data without the code, e.g. an autoregressive decoder.)

# %%
def kl_per_dim(model: VAE) -> torch.Tensor:
    with torch.no_grad():
        mu, logvar = model.encode(X_eval)
        return (0.5 * (mu.square() + logvar.exp() - 1 - logvar)).mean(0).cpu()   # (latent,)


betas = (1.0, 10.0)
kls = {1.0: kl_per_dim(vae)}
torch.manual_seed(cfg.seed)
beta_vae = VAE().to(device)
train(vae_loss(beta_vae, beta=betas[1]), beta_vae.parameters())
kls[betas[1]] = kl_per_dim(beta_vae)
active = {b: int((k > 0.01).sum()) for b, k in kls.items()}
fig, ax = plt.subplots(figsize=(6, 2.5))
for i, (b, k) in enumerate(kls.items()):
    ax.bar(torch.arange(latent) + 0.4 * i, k, width=0.4, label=f"β = {b:g}: {active[b]} active")
ax.set(xlabel="latent dimension", ylabel="KL (nats)", yscale="log")
ax.legend()
plt.close(fig)
display(fig)
print(f"active dimensions: {active}; total KL {kls[1.0].sum():.2f} vs {kls[betas[1]].sum():.2f} nats")
assert kls[betas[1]].sum() < kls[1.0].sum() / 2 and active[betas[1]] <= active[1.0]

# %% [markdown]
# **Walking through the latent space.** Encode two held-out images, decode the codes on the straight line
# between them: the VAE's images morph smoothly. Then an explorer: two sliders move along the VAE's two most
# active latent dimensions, the others stay at 0.

# %%
with torch.no_grad():
    z0, z1 = vae.encode(X_eval[:2])[0]
    path = torch.stack([(1 - a) * z0 + a * z1 for a in torch.linspace(0, 1, 10).tolist()])
    show(vae.decode(path), "interpolating between two codes", ncols=10)

top2 = kls[1.0].topk(2).indices.tolist()


def show_latent(z_a: float = 0.0, z_b: float = 0.0) -> None:
    z = torch.zeros(1, latent, device=device)
    z[0, top2[0]], z[0, top2[1]] = z_a, z_b
    with torch.no_grad():
        img = vae.decode(z).reshape(C, S, S)
    fig, ax = plt.subplots(figsize=(1.6, 1.6))
    ax.imshow(((img + 1) / 2).clamp(0, 1).permute(1, 2, 0).squeeze(-1).cpu(), cmap="gray")
    ax.axis("off")
    plt.close(fig)
    display(fig)


sliders = {k: widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.25, description=f"z[{d}]")
           for k, d in zip(("z_a", "z_b"), top2)}
display(widgets.VBox(list(sliders.values())), widgets.interactive_output(show_latent, sliders))

# %% [markdown]
# ## 4. GANs
# A GAN trains two networks against each other. The **generator** $G$ turns noise $z$ into an image; the
# **discriminator** $D$ outputs the logit of "this image is real". $D$ minimises the cross-entropy of telling
# real from fake. The original **minimax** generator minimises $\log(1 - D(G(z)))$: exactly the opposite of
# $D$'s loss on fakes. At the start, fakes are easy to spot, $D(G(z)) \approx 0$, and there this loss is flat:
# its derivative with respect to the logit $\ell$ is $-\sigma(\ell) \approx 0$. The **non-saturating** loss
# $-\log D(G(z))$ has the same fixed point but derivative $-(1 - \sigma(\ell)) \approx -1$ there. We train a
# discriminator against an untrained generator for a few steps and measure both gradients.
#
# The networks are DCGAN-style: the generator grows a small feature map with transposed convolutions and batch
# norm, the discriminator shrinks the image with strided convolutions and leaky ReLUs.

# %%
z_dim = 32
gan_width = cfg.pick(smoke=16, small=32, full=128)    # channels: transposed convolutions are slow on a CPU


class Generator(nn.Module):
    def __init__(self, ch: int = gan_width) -> None:
        super().__init__()
        self.ch, self.s = ch, S // 4
        self.fc = nn.Linear(z_dim, 2 * ch * self.s * self.s)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * ch), nn.ReLU(),
            nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU(),  # ×2
            nn.ConvTranspose2d(ch, C, 4, stride=2, padding=1), nn.Tanh())                            # ×2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(len(z), 2 * self.ch, self.s, self.s))     # (B, C, S, S)


def discriminator(ch: int = gan_width, spectral: bool = False) -> nn.Sequential:
    sn = spectral_norm if spectral else (lambda m: m)
    return nn.Sequential(
        sn(nn.Conv2d(C, ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        sn(nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        nn.Flatten(), sn(nn.Linear(2 * ch * (S // 4) ** 2, 1)))


def d_loss(D_net, G, x):
    z = torch.randn(len(x), z_dim, device=device)
    real, fake = D_net(x), D_net(G(z).detach())
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_loss(D_net, G, n, kind="non-saturating"):
    logits = D_net(G(torch.randn(n, z_dim, device=device)))
    if kind == "minimax":
        return -F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))    # log(1 - D(G(z)))
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))          # -log D(G(z))


torch.manual_seed(cfg.seed)
G, D_net = Generator().to(device), discriminator().to(device)
train(lambda x: d_loss(D_net, G, x), D_net.parameters(), num_steps=50, lr=1e-3)
with torch.no_grad():
    p_fake = torch.sigmoid(D_net(G(torch.randn(512, z_dim, device=device)))).mean().item()
grad_norms = {}
for kind in ("minimax", "non-saturating"):
    G.zero_grad()
    torch.manual_seed(1)
    g_loss(D_net, G, 512, kind).backward()
    grad_norms[kind] = torch.cat([p.grad.flatten() for p in G.parameters()]).norm().item()
print(f"D(G(z)) = {p_fake:.3f} on average; generator gradient norms: "
      + ", ".join(f"{k} {v:.2e}" for k, v in grad_norms.items()))
assert p_fake < 0.2 and grad_norms["non-saturating"] > 4 * grad_norms["minimax"]

# %% [markdown]
# **Spectral normalisation** divides each weight matrix by its largest singular value $\sigma(W)$, which makes
# every layer, and so the whole discriminator, at most 1-Lipschitz: its output cannot jump when the image
# changes slightly, so the generator gets smooth gradients and training oscillates less. $\sigma(W)$ comes from
# power iteration, $v \leftarrow W^\top u/\lVert W^\top u\rVert,\ u \leftarrow Wv/\lVert Wv\rVert,\
# \sigma \approx u^\top W v$; PyTorch's `spectral_norm` runs one iteration per training step, reusing its $u$.
# Ours from scratch is checked against the exact singular value and against PyTorch's parametrisation.

# %%
def spectral_norm_estimate(W: torch.Tensor, iters: int = 100) -> float:
    W = W.reshape(len(W), -1)
    u = torch.randn(len(W), generator=torch.Generator().manual_seed(0), dtype=W.dtype)
    for _ in range(iters):
        v = F.normalize(W.T @ u, dim=0)
        u = F.normalize(W @ v, dim=0)
    return (u @ W @ v).item()


torch.manual_seed(cfg.seed)
layer = nn.Linear(48, 24)
W = layer.weight.detach().clone()
sigma_exact = torch.linalg.matrix_norm(W, ord=2).item()
sigma_ours = spectral_norm_estimate(W)
sn_layer = spectral_norm(layer)                 # 15 power iterations when registered
for _ in range(20):                             # and one more per training-mode forward pass
    sn_layer(torch.randn(1, 48))
print(f"largest singular value: exact {sigma_exact:.5f}, our power iteration {sigma_ours:.5f}")
assert math.isclose(sigma_ours, sigma_exact, rel_tol=1e-4)
assert torch.allclose(sn_layer.weight, W / sigma_ours, atol=1e-5)
assert math.isclose(torch.linalg.matrix_norm(sn_layer.weight.detach(), ord=2).item(), 1.0, rel_tol=1e-4)

# %% [markdown]
# Now two GANs with the non-saturating loss, one discriminator plain and one spectrally normalised, the usual
# DCGAN optimiser (Adam, learning rate 2·10⁻⁴, β₁ = 0.5), one discriminator step per generator step.
#
# **Mode collapse.** Nothing in the GAN objective rewards diversity: a generator that finds a few images the
# discriminator accepts can produce only those. To see it, we classify the samples with the Fréchet classifier
# and compare the class histogram with the data's: a collapsed GAN covers few classes, or covers them unevenly.
# The snapshots of the same codes during training can show another symptom: the generator hopping from one
# mode to another.

# %%
def train_gan(spectral: bool, seed: int = cfg.seed):
    torch.manual_seed(seed)
    G, D_net = Generator().to(device), discriminator(spectral=spectral).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    z_fixed = torch.randn(8, z_dim, generator=gen).to(device)
    snapshots = []

    def run():
        for step in range(steps):
            x = X_train[torch.randint(len(X_train), (batch_size,), generator=gen).to(device)]
            loss = d_loss(D_net, G, x)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            loss = g_loss(D_net, G, batch_size)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            if (step + 1) % (steps // 4) == 0:
                with torch.no_grad():
                    snapshots.append(G.eval()(z_fixed))
                G.train()
    _, seconds = timed(run)
    return G.eval(), seconds, snapshots


def class_histogram(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.bincount(classifier(x.clamp(-1, 1)).argmax(1), minlength=len(splits.classes)).cpu() / len(x)


gans = {}
for name, spectral in (("GAN", False), ("GAN + spectral norm", True)):
    G, seconds, snapshots = train_gan(spectral)
    gans[name] = G
    with torch.no_grad():
        samples[name], t_gen = timed(lambda G=G: G(torch.randn(n_eval, z_dim, generator=gen).to(device)))
    results[name] = (seconds, [("one pass", 1, samples[name], t_gen)])
    print(f"{name}: {seconds:.1f} s to train, Fréchet distance {fd(samples[name]):.2f}")
    display(show(torch.cat(snapshots), f"{name}: the same 8 codes after 1/4, 2/4, 3/4 and all of training",
                 ncols=8))

hists = {"data": class_histogram(X_eval)} | {name: class_histogram(samples[name]) for name in gans}
fig, ax = plt.subplots(figsize=(7, 2.5))
for i, (name, h) in enumerate(hists.items()):
    ax.bar(torch.arange(len(h)) + 0.27 * i, h, width=0.27, label=name)
ax.set(xticks=range(len(splits.classes)), xticklabels=splits.classes, ylabel="share of images")
ax.legend(fontsize=8)
plt.close(fig)
display(fig)
for name, h in hists.items():
    print(f"{name:>20}: classes with ≥ 2% of the images: {int((h >= 0.02).sum())}, "
          f"largest class share {h.max():.0%}")

# %% [markdown]
# ## 5. Denoising diffusion (DDPM)
# Diffusion turns generation into many small denoising steps. The **forward process** adds a little Gaussian
# noise at each of $T$ steps, $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t$, until
# nothing of the image is left. Because Gaussians compose, $x_t$ given $x_0$ has a closed form: with
# $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$,
# $$ x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon, \qquad \varepsilon\sim\mathcal N(0, I). $$
# We check it twice: the coefficient of $x_0$ and the variance of the noise after iterating $t$ steps equal
# the closed form to float64 precision, and noising one image 4,096 times step by step gives the closed form's
# mean and spread.
#
# Two **noise schedules**: the original *linear* one ($\beta_t$ from $10^{-4}$ to $0.02$ for $T = 1000$,
# rescaled for other $T$) and the *cosine* one, $\bar\alpha_t \propto \cos^2\!\big(\tfrac{t/T + s}{1+s}\,
# \tfrac\pi2\big)$, which destroys information more evenly: the linear schedule makes the last few hundred
# steps almost pure noise.

# %%
def linear_alpha_bar(T: int) -> torch.Tensor:
    scale = 1000 / T
    betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)                             # (T,): ᾱ_1 .. ᾱ_T


def cosine_alpha_bar(T: int, s: float = 0.008) -> torch.Tensor:
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)                     # clipped near t = T, as in the paper
    return torch.cumprod(1 - betas, dim=0)


def betas_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    return 1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])


schedules = {"linear": linear_alpha_bar(T), "cosine": cosine_alpha_bar(T)}
for name, ab in schedules.items():
    beta = betas_of(ab)
    coef, var = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    coefs, variances = [], []
    for b in beta:                          # iterate x_t = sqrt(1-β) x_{t-1} + sqrt(β) ε, tracking x_0's coefficient
        coef, var = coef * (1 - b).sqrt(), (1 - b) * var + b
        coefs.append(coef)
        variances.append(var)
    assert torch.allclose(torch.stack(coefs) ** 2, ab, rtol=1e-10) and torch.allclose(torch.stack(variances), 1 - ab)
    print(f"{name:>6}: ᾱ_T = {ab[-1]:.2e}, steps with ᾱ_t < 0.001: {int((ab < 1e-3).sum())} of {T}")

gen = torch.Generator().manual_seed(cfg.seed)
x0 = X_train[:1].reshape(1, D).cpu().double()
beta = betas_of(schedules["linear"])
t_check = T // 4
x = x0.repeat(4096, 1)
for t in range(t_check):
    x = (1 - beta[t]).sqrt() * x + beta[t].sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
ab = schedules["linear"][t_check - 1]
print(f"after {t_check} steps: mean error {(x.mean(0) - ab.sqrt() * x0).abs().max():.3f}, "
      f"std {x.std(0).mean():.4f} vs closed form {(1 - ab).sqrt():.4f}")
assert (x.mean(0) - ab.sqrt() * x0).abs().max() < 5 / math.sqrt(4096)
assert abs(x.std(0).mean() - (1 - ab).sqrt()) < 0.01

fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for name, ab in schedules.items():
    axes[0].plot(ab, label=name)
    axes[1].plot((ab / (1 - ab)).log(), label=name)
axes[0].set(xlabel="t", ylabel="ᾱ_t (signal kept)")
axes[1].set(xlabel="t", ylabel="log SNR = log ᾱ/(1-ᾱ)")
axes[0].legend()
plt.close(fig)
display(fig)
levels = torch.linspace(0, T - 1, 8).long()
show(torch.cat([(ab[levels, None].sqrt().float().to(device) * X_train[:1].reshape(1, D)
                 + (1 - ab[levels, None]).sqrt().float().to(device) * torch.randn(8, D, device=device))
                for ab in schedules.values()]), "one image noised at 8 levels: linear (top), cosine (bottom)",
     ncols=8)

# %% [markdown]
# **Training** is regression: noise a training image to a random step $t$ and ask a network
# $\varepsilon_\theta(x_t, t)$ to predict the noise that was added, with a mean squared error. Our network is
# an MLP on the flattened image with a sinusoidal embedding of $t/T$ (the same network serves flow matching
# below, so the comparison is fair).
#
# **Ancestral sampling** runs the learned reverse process from pure noise, $T$ network calls:
# $x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,
# \varepsilon_\theta(x_t, t)\big) + \sqrt{\beta_t}\,z$.
#
# **DDIM** reads the same network differently: from $x_t$ and the predicted noise it estimates the clean image
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ and jumps straight to any
# earlier step $s$ with $x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s}\,\hat\varepsilon$, no new
# noise. It can therefore skip steps: 20 calls instead of 1000. With the *true* noise one DDIM jump lands
# exactly where the forward process would have put the image at step $s$; the cell checks that.
#
# **Clipping $\hat x_0$.** Near $t = T$ the ancestral formula divides by $\sqrt{\alpha_t}$, which the cosine
# schedule makes as small as $\sqrt{0.001}$: any error of the predicted noise is amplified about 30 times. The
# same step can be written through $\hat x_0$, as the mean of $q(x_{t-1}\mid x_t, x_0 = \hat x_0)$,
# $\frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\hat x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}
# {1-\bar\alpha_t}x_t$ (the cell checks the two forms agree), and there DDPM's own code clips $\hat x_0$ to the
# data's range $[-1, 1]$ before using it. Both samplers below clip; the unclipped versions are in the lab.

# %%
class Denoiser(nn.Module):
    """An MLP predicting a (B, D) target from x (B, D) and a time t (B,) in [0, 1]."""

    def __init__(self, t_dim: int = 64) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.net = mlp(D + t_dim, D, depth=4)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.arange(self.t_dim // 2, device=x.device) * (-math.log(1000.0) / (self.t_dim // 2)))
        angles = 1000 * t[:, None] * freqs                                      # (B, t_dim/2)
        return self.net(torch.cat([x.reshape(len(x), D), angles.sin(), angles.cos()], dim=-1))


def ddpm_loss(model: Denoiser, alpha_bar: torch.Tensor):
    ab_all = alpha_bar.float().to(device)

    def loss(x0):
        x0 = x0.reshape(len(x0), D)
        t = torch.randint(T, (len(x0),), device=device)                         # step index 0..T-1
        eps = torch.randn_like(x0)
        ab = ab_all[t, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return F.mse_loss(model(x_t, (t + 1) / T), eps)
    return loss


@torch.no_grad()
def ancestral_sample(model: Denoiser, alpha_bar: torch.Tensor, n: int, gen: torch.Generator,
                     clip: bool = True) -> torch.Tensor:
    ab = alpha_bar.float().to(device)
    beta = betas_of(alpha_bar).float().to(device)
    x = torch.randn(n, D, generator=gen).to(device)
    for t in reversed(range(T)):
        eps = model(x, torch.full((n,), (t + 1) / T, device=device))
        x0_hat = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        x0_hat = x0_hat.clamp(-1, 1) if clip else x0_hat
        ab_prev = ab[t - 1] if t > 0 else torch.ones((), device=device)
        x = (ab_prev.sqrt() * beta[t] * x0_hat + (1 - beta[t]).sqrt() * (1 - ab_prev) * x) / (1 - ab[t])
        if t > 0:
            x = x + beta[t].sqrt() * torch.randn(n, D, generator=gen).to(device)
    return x


def ddim_step(x_t, eps, ab_t, ab_s, clip: bool = False):
    """Jump from step t to an earlier step s (η = 0): through the clean image predicted from eps."""
    x0_hat = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    if clip:                                         # clip x̂0, and take the noise that goes with it
        x0_hat = x0_hat.clamp(-1, 1)
        eps = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
    return ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps


@torch.no_grad()
def ddim_sample(model: Denoiser, alpha_bar: torch.Tensor, n: int, num_steps: int,
                gen: torch.Generator) -> torch.Tensor:
    ab = alpha_bar.float().to(device)
    ts = torch.linspace(T - 1, 0, num_steps).round().long().tolist()            # from T-1 down to 0
    x = torch.randn(n, D, generator=gen).to(device)
    for i, t in enumerate(ts):
        eps = model(x, torch.full((n,), (t + 1) / T, device=device))
        ab_s = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device)   # the last jump: to x_0
        x = ddim_step(x, eps, ab[t], ab_s, clip=True)
    return x


ab = schedules["linear"]
eps_true = torch.randn(4, D, dtype=torch.float64)
x0 = X_train[:4].reshape(4, D).cpu().double()
x_t = ab[600 * T // 1000].sqrt() * x0 + (1 - ab[600 * T // 1000]).sqrt() * eps_true
x_s = ddim_step(x_t, eps_true, ab[600 * T // 1000], ab[200 * T // 1000])
assert torch.allclose(x_s, ab[200 * T // 1000].sqrt() * x0 + (1 - ab[200 * T // 1000]).sqrt() * eps_true)
assert torch.allclose(ddim_step(x_t, eps_true, ab[600 * T // 1000], torch.tensor(1.0, dtype=torch.float64)), x0)
for t in (T - 1, T // 2, 1):                   # the ancestral mean: the ε form equals the x̂0 form (unclipped)
    beta_t, ab_prev = betas_of(ab)[t], ab[t - 1]
    eps_hat = torch.randn(4, D, dtype=torch.float64)           # any prediction, right or wrong
    x0_hat = (x_t - (1 - ab[t]).sqrt() * eps_hat) / ab[t].sqrt()
    assert torch.allclose((x_t - beta_t / (1 - ab[t]).sqrt() * eps_hat) / (1 - beta_t).sqrt(),
                          (ab_prev.sqrt() * beta_t * x0_hat + (1 - beta_t).sqrt() * (1 - ab_prev) * x_t) / (1 - ab[t]))

diffusion = {}
for name, alpha_bar in schedules.items():
    torch.manual_seed(cfg.seed)
    model = Denoiser().to(device)
    losses, seconds = train(ddpm_loss(model, alpha_bar), model.parameters(), num_steps=denoiser_steps)
    diffusion[name] = model.eval()
    print(f"DDPM, {name} schedule: loss {sum(losses[:20]) / 20:.3f} → {sum(losses[-20:]) / 20:.3f}, "
          f"{seconds:.1f} s")
    assert sum(losses[-20:]) < sum(losses[:20])
    rows = []
    for label, nfe, fn in [("ancestral", T, lambda m=model, ab=alpha_bar: ancestral_sample(m, ab, n_eval, gen))] + [
            ("DDIM", k, lambda k=k, m=model, ab=alpha_bar: ddim_sample(m, ab, n_eval, k, gen))
            for k in cfg.pick(smoke=(5, 20), small=(5, 10, 20, 50), full=(5, 10, 20, 50))]:
        x, t_sample = timed(fn)
        rows.append((label, nfe, x, t_sample))
    results[f"DDPM ({name})"] = (seconds, rows)
    samples[f"DDPM ({name})"] = rows[0][2]
show(torch.cat([results["DDPM (linear)"][1][0][2][:16], results["DDPM (linear)"][1][-1][2][:16]]),
     f"DDPM (linear schedule): ancestral, {T} steps (top); DDIM, {results['DDPM (linear)'][1][-1][1]} steps "
     "(bottom)")

# %% [markdown]
# ## 6. Flow matching (rectified flow)
# Flow matching skips the noise schedule. Draw noise $x_0 \sim \mathcal N(0, I)$ and an image $x_1$, walk the
# **straight line** $x_t = (1 - t)\,x_0 + t\,x_1$ for $t \in [0, 1]$, and regress a network $v_\theta(x_t, t)$
# on the line's velocity $x_1 - x_0$. The network learns the average velocity through each point, which
# defines an ordinary differential equation $\mathrm dx/\mathrm dt = v_\theta(x, t)$ carrying noise to data.
# Sampling integrates it: **Euler** steps $x \leftarrow x + h\,v_\theta(x, t)$, or **Heun** steps, which
# average the slope at both ends of the step (2 network calls per step, second-order accurate).
#
# If the paths were straight for the learned field, one Euler step would suffice. For a dataset of a single
# image they are: the exact velocity field is $v(x, t) = (x_1 - x)/(1 - t)$, and one Euler step from noise
# lands exactly on $x_1$. For real data, paths of different images cross, the field averages them and bends,
# and more steps help; the table at the end measures how many.

# %%
def flow_matching_loss(model: Denoiser):
    def loss(x1):
        x1 = x1.reshape(len(x1), D)
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), device=device)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        return F.mse_loss(model(x_t, t), x1 - x0)
    return loss


@torch.no_grad()
def flow_sample(velocity, n: int, num_steps: int, gen: torch.Generator, method: str = "euler") -> torch.Tensor:
    x = torch.randn(n, D, generator=gen).to(device)
    ts = torch.linspace(0, 1, num_steps + 1).tolist()
    for t, t_next in itertools.pairwise(ts):
        h = t_next - t
        v = velocity(x, torch.full((n,), t, device=device))
        if method == "heun":
            v_next = velocity(x + h * v, torch.full((n,), t_next, device=device))
            v = (v + v_next) / 2
        x = x + h * v
    return x


x1 = X_train[:1].reshape(1, D)
one_step = flow_sample(lambda x, t: (x1 - x) / (1 - t[:, None]), 4, 1, torch.Generator().manual_seed(0))
assert torch.allclose(one_step, x1.expand(4, D), atol=1e-5)

torch.manual_seed(cfg.seed)
flow = Denoiser().to(device)
fm_losses, fm_time = train(flow_matching_loss(flow), flow.parameters(), num_steps=denoiser_steps)
flow.eval()
print(f"flow matching: loss {sum(fm_losses[:20]) / 20:.3f} → {sum(fm_losses[-20:]) / 20:.3f}, {fm_time:.1f} s")
assert sum(fm_losses[-20:]) < sum(fm_losses[:20])
fm_rows = []
for method in ("euler", "heun"):
    for k in cfg.pick(smoke=(1, 4, 16), small=(1, 2, 5, 10, 20, 50), full=(1, 2, 5, 10, 20, 50)):
        nfe = k * (2 if method == "heun" else 1)
        x, t_sample = timed(lambda k=k, m=method: flow_sample(flow, n_eval, k, gen, m))
        fm_rows.append((method, nfe, x, t_sample))
results["flow matching"] = (fm_time, fm_rows)
samples["flow matching"] = fm_rows[-1 - len(fm_rows) // 2][2]        # Euler with the most steps
euler = [(nfe, x) for m, nfe, x, _ in fm_rows if m == "euler"]
show(torch.cat([x[:8] for _, x in euler]), "flow matching, Euler with " + ", ".join(str(n) for n, _ in euler)
     + " steps (one row each)", ncols=8)

# %% [markdown]
# ## 7. Comparing the models
# The same evaluation for every model: $n$ samples against the $n$ held-out images, Fréchet distance on the
# classifier's features, the training time (DDPM and flow matching train the same network for the same number
# of steps on the same batches, so their training compute is equal) and the sampling cost, in
# network evaluations (NFE) and measured seconds for all $n$ samples. Again: these are *not* Inception FIDs.

# %%
table = [("real vs real (floor)", "", 0, 0.0, 0.0, fd_real), ("uniform noise", "", 0, 0.0, 0.0, fd_noise)]
for method, (train_s, rows) in results.items():
    for sampler, nfe, x, sample_s in rows:
        table.append((method, sampler, nfe, train_s, sample_s, fd(x)))
print(f"{'model':>22} | {'sampler':>12} | {'NFE':>5} | {'train (s)':>9} | {'sample (s)':>10} | {'Fréchet':>8}")
for method, sampler, nfe, train_s, sample_s, dist in table:
    print(f"{method:>22} | {sampler:>12} | {nfe:>5} | {train_s:>9.1f} | {sample_s:>10.3f} | {dist:>8.2f}")
fds = {(m, s, n): d for m, s, n, _, _, d in table}

best = {m: min(d for (m2, _, _), d in fds.items() if m2 == m) for m in results}
ddpm_full = fds["DDPM (linear)", "ancestral", T]
fm_best = min(d for (m, s, n), d in fds.items() if m == "flow matching")
fm_one = fds["flow matching", "euler", 1]
print("best per model: " + ", ".join(f"{m} {d:.2f}" for m, d in best.items()))
assert all(d < fd_noise for m, d in best.items() if m.startswith(("DDPM", "flow")))     # they learned something

show(torch.cat([samples[m][:8].reshape(8, D) for m in samples]), "one row per model, top to bottom: "
     + ", ".join(samples), ncols=8)

# %% [markdown]
# **Diffusion against flow matching at equal compute.** Both trained the same network for the same number of
# steps on the same batches; the cell below lines up their samplers by the number of network evaluations.

# %%
ddim = {n: d for (m, s, n), d in fds.items() if m == "DDPM (linear)" and s == "DDIM"}
fm_euler = {n: d for (m, s, n), d in fds.items() if m == "flow matching" and s == "euler"}
fm_heun = {n: d for (m, s, n), d in fds.items() if m == "flow matching" and s == "heun"}
print(f"training: DDPM (linear) {results['DDPM (linear)'][0]:.1f} s, flow matching {results['flow matching'][0]:.1f} s"
      f" for {denoiser_steps} steps each")
print(f"{'NFE':>5} | {'DDIM':>8} | {'FM Euler':>8} | {'FM Heun':>8}")
for n in sorted(set(ddim) | set(fm_euler) | set(fm_heun)):
    cells = [f"{d[n]:>8.2f}" if n in d else f"{'':>8}" for d in (ddim, fm_euler, fm_heun)]
    print(f"{n:>5} | " + " | ".join(cells))
ranking = sorted(best.items(), key=lambda kv: kv[1])
print("models from best to worst (best sampler of each): " + " < ".join(f"{m} ({d:.1f})" for m, d in ranking))

# %% [markdown]
# What to look for in the two tables (the numbers are this run's; at `smoke` the models have barely trained):
# - The autoencoder's random codes are drawn from a Gaussian with the spread of its training codes, which
#   works only as far as those codes happen to fill that Gaussian; the VAE was trained to make its codes fill
#   the prior. Both decode to smooth, often blurry images: a Gaussian decoder predicts a mean image.
# - The GANs sample in one network call; their quality varies from run to run (try another seed), and the
#   class histogram shows whether they cover every class.
# - Ancestral sampling needs all $T$ network calls; how close DDIM comes with 5 to 50 calls of the same network
#   is the point of DDIM. Compare the two schedules at equal training too.
# - How flow matching's distance falls with the number of Euler steps shows how straight its learned paths
#   are; Heun spends two network calls per step and usually needs fewer calls for the same distance.
#
# ## Summary
# - An autoencoder compresses; a VAE makes the code a Gaussian and maximises the ELBO (reconstruction − KL,
#   the KL in closed form), trained through the reparameterisation $z = \mu + \sigma\varepsilon$; β > 1 trades
#   reconstruction for a simpler code, down to collapsed dimensions the decoder ignores.
# - A GAN's generator learns from a discriminator. The non-saturating loss keeps its gradients alive when the
#   discriminator wins; spectral normalisation (power iteration for $\sigma(W)$) bounds the discriminator's
#   slope. Nothing in the objective asks for diversity: mode collapse.
# - DDPM noises data in closed form, $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon$,
#   trains a noise predictor by regression and samples by reversing $T$ steps; DDIM reuses the network with far
#   fewer deterministic steps. The schedule decides how the noise levels are spent.
# - Flow matching regresses the velocity $x_1 - x_0$ of straight noise-to-data paths and samples by
#   integrating an ODE with Euler or Heun steps.
# - A Fréchet distance on a classifier's features compares models by quality; training time and network
#   calls per sample compare their cost.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Bernoulli decoder.** Replace the VAE's Gaussian decoder by a Bernoulli one on pixels in [0, 1]
#    (binary cross-entropy). Are the samples sharper? How does the ELBO compare, and why can't you compare the
#    two ELBOs directly?
# 2. **WGAN-GP.** Replace spectral normalisation by a gradient penalty $\lambda(\lVert\nabla_x D(\hat x)\rVert
#    - 1)^2$ on random interpolates $\hat x$ of real and fake images, with the Wasserstein losses. Compare the
#    Fréchet distance and how it varies over three seeds.
# 3. **Class-conditional diffusion with guidance.** Give the denoiser the label (dropped 10% of the time) and
#    sample with classifier-free guidance $\hat\varepsilon = (1 + w)\,\varepsilon(x, y) - w\,\varepsilon(x)$.
#    Plot the Fréchet distance and the class accuracy of the samples against $w$.
# 4. **Reflow.** Sample pairs (noise, generated image) from the flow-matching model and train a second model on
#    the straight lines between them. How does one-step Euler sampling compare before and after?
# 5. **Predicting ε, x₀ or v.** Train the DDPM to predict $x_0$ or the velocity $v = \sqrt{\bar\alpha}\,
#    \varepsilon - \sqrt{1-\bar\alpha}\,x_0$ instead of ε, with the same sampler. Which converges fastest here?
