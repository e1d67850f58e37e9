"""PyTorch CPU anchor for `cargo bench --bench parallel -- sit_small_train_step_batch16_ndarray/peers_1`
(one training step of the small SiT the generator trainer runs): the official SiT in its 1-D mode
(`shared/spec/generative.md` §2-4) at the bench's sizes: 128 latent tokens of 32 channels, depth 4,
width 192, 3 heads, MLP 768 with tanh GELU, adaLN-Zero blocks (timm's Attention and Mlp, as the
official code builds them), sinusoidal timestep embedder + MLP, label embedder with 2 classes and
the null class (label dropout 0.1), fixed 1-D sin-cos position embedding, final adaLN layer.
One step: linear interpolant, uniform t, velocity target, per-sample MSE, backward, global-norm
clipping at 1, AdamW (lr 1e-4, no weight decay), EMA (decay 0.9999) over every parameter.
Batch 16, f32 (the trainer's mode on the CPU), on N threads.

  .venv-torch/bin/python benches/torch_sit_step_reference.py [--threads 2] [--batch 16]
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
    """The official `SiTBlock`."""

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


class SiT(nn.Module):
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
        self.final_linear = nn.Linear(D, C)
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


model = SiT()
ema = copy.deepcopy(model).requires_grad_(False)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.999), weight_decay=0, eps=1e-8)
x0 = torch.randn(a.batch, L, C)
labels = torch.randint(0, K, (a.batch,))


def step():
    t = torch.rand(a.batch, 1, 1)
    eps = torch.randn_like(x0)
    xt, target = (1 - t) * x0 + t * eps, eps - x0
    loss = ((model(xt, t.flatten(), labels) - target) ** 2).mean(dim=(1, 2)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
