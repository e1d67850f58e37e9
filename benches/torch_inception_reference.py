"""PyTorch CPU anchor for `cargo bench --bench eval -- inception_features_ndarray/pool_spatial_logits/8`:
torchvision's Inception-v3 (random weights, no auxiliary head), batch 8 at 299², f32, inference,
on N threads. (The FID network's layout, pytorch-fid's FIDInceptionA/C/E, has the same
convolutions; its pooling variants do not change the cost.)

  python3 -m venv .venv-torch && .venv-torch/bin/pip install torch torchvision
  .venv-torch/bin/python benches/torch_inception_reference.py [--batch 8] [--threads 2]
Prints one JSON line."""
import argparse, json, time
import torch
from torchvision.models import inception_v3

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=5)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
x = torch.randn(a.batch, 3, 299, 299)
times = []
with torch.inference_mode():
    model(x)
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
best = min(times)
print(json.dumps({"torch": torch.__version__, "batch": a.batch, "threads": a.threads,
                  "seconds_min": best, "seconds_median": sorted(times)[len(times) // 2],
                  "images_per_second": a.batch / best}))
