"""PyTorch CPU anchor for `cargo bench --bench parallel -- dit_small_train_step_batch16_ndarray/peers_1`
(one training step of the small DiT the generator trainer runs): the official DiT in its 1-D mode
(`shared/spec/generative.md` §6-8) at the bench's sizes: 128 latent tokens of 32 channels, depth 4,
width 192, 3 heads, MLP 768 with tanh GELU, adaLN-Zero blocks (timm's Attention and Mlp, as the
official code builds them), sinusoidal timestep embedder (integer DDPM index) + MLP, label embedder
with 2 classes and the null class (label dropout 0.1), fixed 1-D sin-cos position embedding, final
adaLN layer with learned variance (2C = 64 output channels).
One step: t ~ U{0..999}, linear betas (f64 tables), x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, the
hybrid loss of `training_losses` (eps MSE + the VB term on the learned-range variance with eps-hat
detached; the discretised Gaussian at t = 0), backward, no clipping, AdamW (lr 1e-4, no weight
decay), EMA (decay 0.9999) over every parameter. Batch 16, f32, on N threads.

  .venv-torch/bin/python benches/torch_dit_step_reference.py [--threads 2] [--batch 16]
Prints one JSON line."""
import argparse, copy, json, math, time
import torch, torch.nn as nn
from timm.models.vision_transformer import Attention, Mlp

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--depth", type=int, default=4)
ap.add_argument("--width", type=int, default=192)
ap.add_argument("--heads", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
L, C, K, D = 128, 32, 2, a.width


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    """The official `DiTBlock`."""

    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, num_heads=a.heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=D, hidden_features=4 * D, act_layer=lambda: nn.GELU(approximate="tanh"), drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D, bias=True))

    def forward(self, x, c):
        sm, scm, gm, sp, scp, gp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gm.unsqueeze(1) * self.attn(modulate(self.norm1(x), sm, scm))
        return x + gp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sp, scp))


class DiT(nn.Module):
    def __init__(self):
        super().__init__()
        self.x_embedder = nn.Linear(C, D)
        pos = torch.arange(L, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(D // 2, dtype=torch.float64) / (D / 2))
        self.pos_embed = nn.Parameter(torch.cat([pos.sin(), pos.cos()], 1).float()[None], requires_grad=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.y_table = nn.Embedding(K + 1, D)
        self.blocks = nn.ModuleList(Block() for _ in range(a.depth))
        self.norm_final = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final_linear = nn.Linear(D, 2 * C)
        for blk in self.blocks:  # adaLN-Zero would make the first steps' gradients trivially sparse
            nn.init.normal_(blk.adaLN_modulation[1].weight, std=0.02)

    def forward(self, x, t, y):
        f = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        arg = t[:, None].float() * f[None]
        c = self.t_mlp(torch.cat([arg.cos(), arg.sin()], 1))
        y = torch.where(torch.rand(y.shape[0]) < 0.1, torch.full_like(y, K), y)
        c = c + self.y_table(y)
        h = self.x_embedder(x) + self.pos_embed
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=1)
        return self.final_linear(modulate(self.norm_final(h), shift, scale))


model = DiT()
ema = copy.deepcopy(model).requires_grad_(False)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.999), weight_decay=0, eps=1e-8)
x0 = torch.randn(a.batch, L, C)
labels = torch.randint(0, K, (a.batch,))


# Linear schedule, T = 1000 (f64 tables; extraction casts to f32).
T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
abar = torch.cumprod(1 - betas, 0)
abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
post_var = betas * (1 - abar_prev) / (1 - abar)
post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
coef1 = betas * abar_prev.sqrt() / (1 - abar)
coef2 = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)
tab = {k: v for k, v in dict(sa=abar.sqrt(), s1a=(1 - abar).sqrt(), ria=(1 / abar).sqrt(), rim1=(1 / abar - 1).sqrt(),
                             c1=coef1, c2=coef2, plv=post_logvar, lb=betas.log()).items()}


def ex(name, t):
    return tab[name][t].float()[:, None, None]


def approx_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def disc_loglik(x, mean, log_scale):
    c, inv = x - mean, torch.exp(-log_scale)
    cdf_p, cdf_m = approx_cdf(inv * (c + 1 / 255)), approx_cdf(inv * (c - 1 / 255))
    mid = torch.log((cdf_p - cdf_m).clamp(min=1e-12))
    lo, hi = torch.log(cdf_p.clamp(min=1e-12)), torch.log((1 - cdf_m).clamp(min=1e-12))
    return torch.where(x < -0.999, lo, torch.where(x > 0.999, hi, mid))


def step():
    t = torch.randint(0, T, (a.batch,))
    eps = torch.randn_like(x0)
    xt = ex("sa", t) * x0 + ex("s1a", t) * eps
    out = model(xt, t, labels)
    eps_hat, v = out[..., :C], out[..., C:]
    mse = ((eps - eps_hat) ** 2).mean(dim=(1, 2))
    frac = (v + 1) / 2
    logvar = frac * ex("lb", t) + (1 - frac) * ex("plv", t)
    x0_hat = ex("ria", t) * xt - ex("rim1", t) * eps_hat.detach()
    mu = ex("c1", t) * x0_hat + ex("c2", t) * xt
    mu_true, lv_true = ex("c1", t) * x0 + ex("c2", t) * xt, ex("plv", t)
    kl = 0.5 * (-1.0 + logvar - lv_true + torch.exp(lv_true - logvar) + (mu_true - mu) ** 2 * torch.exp(-logvar))
    nll = -disc_loglik(x0, mu, 0.5 * logvar)
    vb = torch.where(t == 0, nll.mean(dim=(1, 2)), kl.mean(dim=(1, 2))) / math.log(2.0)
    loss = (mse + vb).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(0.9999).add_(p, alpha=0.0001)


for _ in range(5):
    step()
ts = []
for _ in range(a.steps):
    t0 = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t0)
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "batch": a.batch, "depth": a.depth, "width": D,
                  "s_per_step_median": sorted(ts)[len(ts) // 2], "s_per_step_min": min(ts)}))
