"""PyTorch CPU anchor for `cargo bench --bench generative -- sit_xl_1`: the SiT-XL/1 trunk on the
MAETok-B-128 latent (128 tokens, width 1152, 28 adaLN-Zero blocks of 16 heads, MLP 4608 with
tanh GELU, timm's Attention and Mlp as the official SiT/DiT code builds them), batch 8, f32,
inference, on N threads. The embedders and the final layer are left out (< 1 % of the FLOPs).

  python3 -m venv .venv-torch && .venv-torch/bin/pip install torch timm
  .venv-torch/bin/python benches/torch_sit_reference.py [--batch 8] [--threads 2]
Prints one JSON line."""
import argparse, json, time
import torch
from torch import nn
from timm.models.vision_transformer import Attention, Mlp

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
D, DEPTH, HEADS, N = 1152, 28, 16, 128


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    """The official `SiTBlock` / `DiTBlock`."""

    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(D, num_heads=HEADS, qkv_bias=True)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=D, hidden_features=4 * D, act_layer=lambda: nn.GELU(approximate="tanh"), drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D, bias=True))

    def forward(self, x, c):
        sm, scm, gm, sp, scp, gp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gm.unsqueeze(1) * self.attn(modulate(self.norm1(x), sm, scm))
        return x + gp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sp, scp))


blocks = nn.ModuleList(Block() for _ in range(DEPTH)).eval()
x, c = torch.randn(a.batch, N, D), torch.randn(a.batch, D)


def trunk(x):
    for b in blocks:
        x = b(x, c)
    return x


ts = []
with torch.no_grad():
    trunk(x)
    for _ in range(a.repeats):
        t = time.perf_counter(); trunk(x); ts.append(time.perf_counter() - t)
med = sorted(ts)[len(ts) // 2]
flop = DEPTH * (2 * N * D * (3 * D + D + 8 * D) + 2 * 2 * N * N * D + 2 * D * 6 * D)
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "batch": a.batch,
                  "s_per_batch": med, "latents_per_s": a.batch / med, "gflops": flop * a.batch / med / 1e9}))
