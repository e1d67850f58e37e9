"""PyTorch CPU anchor for `cargo bench --bench tokenizer_train -- tiny_quickstart` (the README
quickstart's training step): a stand-in of the same shapes written with timm blocks, since the
official code is not available offline here. Tiny MAETok at 64x64, patch 8 (64 patches), 16
latent tokens of 8 channels, encoder and pixel decoder of width 64, depth 2, 4 heads, MoVQ-style
adaLN modulation of the decoder blocks by the latents, an auxiliary HOG decoder (width 64, depth 1)
on the masked patches, 40-60 % token masking, batch 16; loss = pixel MSE + HOG MSE on masked
tokens; backward, global-norm clipping, AdamW, EMA. Left out (so the anchor is, if anything,
cheaper than our step): the mixed 2-D RoPE, the latent normalisation, HOG's L2 cell
normalisation. f32 by default, `--bf16` for bf16 autocast (the mode in which the official
code trains on current PyTorch).

  .venv-torch/bin/python benches/torch_tiny_step_reference.py [--threads 2] [--bf16]
Prints one JSON line."""
import argparse, copy, json, math, time
import torch, torch.nn as nn, torch.nn.functional as F
from timm.models.vision_transformer import Block

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--bf16", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
S, P, D, T, C, H = 64, 8, 64, 16, 8, 4
N = (S // P) ** 2


class MovqBlock(nn.Module):
    """A pre-norm ViT block whose two LayerNorms are modulated (shift, scale) by the latents."""

    def __init__(self):
        super().__init__()
        self.blk = Block(D, H, mlp_ratio=4.0, qkv_bias=True)
        self.ada = nn.Linear(C, 4 * D)

    def forward(self, x, z):
        m = self.ada(F.silu(z)).mean(1, keepdim=True).chunk(4, -1)
        h = self.blk.norm1(x) * (1 + m[1]) + m[0]
        x = x + self.blk.attn(h)
        h = self.blk.norm2(x) * (1 + m[3]) + m[2]
        return x + self.blk.mlp(h)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, P, P)
        self.pos = nn.Parameter(torch.zeros(1, N, D))
        self.latents = nn.Parameter(torch.randn(1, T, D) * 0.02)
        self.enc = nn.ModuleList([Block(D, H, qkv_bias=True) for _ in range(2)])
        self.enc_norm = nn.LayerNorm(D)
        self.quant = nn.Linear(D, C)
        self.post_quant = nn.Linear(C, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dec_pos = nn.Parameter(torch.zeros(1, N, D))
        self.dec = nn.ModuleList([MovqBlock() for _ in range(2)])
        self.dec_norm = nn.LayerNorm(D)
        self.to_pixel = nn.Linear(D, P * P * 3)
        self.aux = nn.ModuleList([MovqBlock()])
        self.aux_head = nn.Linear(D, 27)

    def forward(self, img, keep):
        b = img.shape[0]
        x = self.patch(img).flatten(2).transpose(1, 2) + self.pos
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, D))
        x = torch.cat([x, self.latents.expand(b, -1, -1)], 1)
        for blk in self.enc:
            x = blk(x)
        z = self.quant(self.enc_norm(x)[:, -T:])
        zq = self.post_quant(z)
        y = torch.cat([self.mask_token.expand(b, N, -1) + self.dec_pos, zq], 1)
        a = y
        for blk in self.dec:
            y = blk(y, z)
        pix = self.to_pixel(self.dec_norm(y)[:, :N])
        for blk in self.aux:
            a = blk(a, z)
        return pix, self.aux_head(a[:, :N])


def hog(img):
    """Sobel gradients, 9 orientation bins weighted by magnitude, summed over 8x8 cells: [B, N, 27]."""
    kx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).repeat(3, 1, 1, 1)
    ky = kx.transpose(2, 3).contiguous()
    p = F.pad(img, (1, 1, 1, 1), mode="reflect")
    gx, gy = F.conv2d(p, kx, groups=3), F.conv2d(p, ky, groups=3)
    mag = (gx ** 2 + gy ** 2).sqrt()
    bins = torch.floor(torch.atan2(gx, gy) / math.pi * 9) % 9
    hist = torch.stack([F.avg_pool2d(mag * (bins == k), P) * P * P for k in range(9)], 2)
    return hist.flatten(1, 2).flatten(2).transpose(1, 2)


model = Tiny()
ema = copy.deepcopy(model).requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-4)
img = torch.rand(a.batch, 3, S, S) * 2 - 1


def step():
    with torch.no_grad():
        target_hog = hog(img)
    ratio = torch.empty(()).uniform_(0.4, 0.6).item()
    n_keep = N - int(N * ratio)
    order = torch.rand(a.batch, N).argsort(1)
    keep, masked = order[:, :n_keep], torch.ones(a.batch, N, dtype=torch.bool)
    masked.scatter_(1, keep, False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        pix, aux = model(img, keep)
    target = img.unfold(2, P, P).unfold(3, P, P).permute(0, 2, 3, 1, 4, 5).reshape(a.batch, N, -1)
    loss = F.mse_loss(pix.float(), target) + F.mse_loss(aux.float()[masked], target_hog[masked])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 0.01)


for _ in range(5):
    step()
ts = []
for _ in range(a.steps):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "batch": a.batch, "bf16": a.bf16,
                  "s_per_step_median": sorted(ts)[len(ts) // 2], "s_per_step_min": min(ts)}))
