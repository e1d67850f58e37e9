"""PyTorch CPU anchor for `cargo bench --bench tokenizer_train -- maetok_b128_ndarray/autoencoder`
(MAETok-B-128's encoder + pixel decoder, forward + pixel loss + backward + AdamW + EMA, batch 1):
a stand-in of the same sizes from timm blocks, since the official code is not available offline
here. Two ViT-B trunks (width 768, 12 blocks, 12 heads, MLP 3072): the encoder on 1 + 256 + 128 =
385 tokens, whose 128 latent rows (projected to 32 channels and back) join 256 mask tokens in the
decoder's 384; MSE on the decoder's image rows; AdamW over both trunks and the projections, and an
EMA copy of all parameters, as our trainer keeps. Left out (so the anchor is, if anything, cheaper
than our step): token masking, RoPE, MoVQ modulation, patch embedding and unpatchify.

  .venv-torch/bin/python benches/torch_b128_step_reference.py [--threads 2] [--steps 4]
Prints one JSON line; wrap with benches/peak_rss.py for the peak resident memory."""
import argparse, copy, json, time
import torch, torch.nn as nn
from timm.models.vision_transformer import Block

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=4)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
D, H, DEPTH, T, C, N = 768, 12, 12, 128, 32, 256


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(*[Block(D, H, 4.0, qkv_bias=True) for _ in range(DEPTH)])
        self.enc_norm = nn.LayerNorm(D)
        self.to_z = nn.Linear(D, C)
        self.from_z = nn.Linear(C, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dec = nn.Sequential(*[Block(D, H, 4.0, qkv_bias=True) for _ in range(DEPTH)])
        self.dec_norm = nn.LayerNorm(D)

    def forward(self, tokens):
        h = self.enc_norm(self.enc(tokens))
        z = self.to_z(h[:, -T:])
        d = torch.cat([self.mask_token.expand(tokens.shape[0], N, D), self.from_z(z)], 1)
        return self.dec_norm(self.dec(d))[:, :N]


m = StandIn().train()
ema = copy.deepcopy(m).requires_grad_(False)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-4)
x = torch.randn(1, 1 + N + T, D)
target = torch.randn(1, N, D)
ts = []
for i in range(a.steps + 1):
    t = time.perf_counter()
    loss = (m(x) - target).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), m.parameters()):
            e.mul_(0.9999).add_(p, alpha=1e-4)
    if i:
        ts.append(time.perf_counter() - t)
print(json.dumps({"torch": torch.__version__, "threads": a.threads, "batch": 1,
                  "s_per_step_median": sorted(ts)[len(ts) // 2], "s_per_step_min": min(ts)}))
