# Writes a PyTorch-format (zip, protocol 2) state dict without torch: fake torch._utils /
# torch.FloatStorage so pickle records the same GLOBALs torch.save writes.
import sys, types, pickle, zipfile, struct, io, json, collections

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class FloatStorage: pass
FloatStorage.__module__ = "torch"; torch.FloatStorage = FloatStorage; torch._utils = utils
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils

class Storage:
    def __init__(self, key, values): self.key, self.values = key, values
class Tensor:
    def __init__(self, storage, shape): self.storage, self.shape = storage, shape
    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape): stride.insert(0, acc); acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None

# The LPIPS linear layers from the fixture (safetensors read by hand).
b = open("/work/shared/fixtures/lpips-tiny/lpips_lin_vgg.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8+n])
sd = collections.OrderedDict(); storages = []
for i, (k, v) in enumerate(sorted((k, v) for k, v in h.items() if k != "__metadata__")):
    o = v["data_offsets"]; raw = b[8+n+o[0]:8+n+o[1]]
    vals = struct.unpack("<%df" % (len(raw)//4), raw)
    st = Storage(str(i), vals); storages.append(st)
    sd[k] = Tensor(st, v["shape"])
buf = io.BytesIO(); P(buf, protocol=2).dump(sd)
with zipfile.ZipFile("lpips_lin_vgg.pth", "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/version", "3\n")
    for st in storages:
        z.writestr("archive/data/" + st.key, struct.pack("<%df" % len(st.values), *st.values))
print("ok", len(sd))
