"""Peak resident memory of a PyTorch anchor's timed work, measured as `benches/common/peak_rss.rs`
measures ours: the process's high-water mark is reset (`/proc/self/clear_refs` <- 5) at the
anchor's first `time.perf_counter()` call (after the model, inputs and optimiser are built, before
the first timed iteration), and `VmHWM` is read at exit. Linux only.

  .venv-torch/bin/python benches/peak_rss.py benches/torch_inception_reference.py --batch 8
Prints the anchor's own output, then one JSON line {"peak_rss_mib": ...}."""
import atexit, json, runpy, sys, time

_perf_counter = time.perf_counter
_reset = []


def perf_counter():
    if not _reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _reset.append(True)
    return _perf_counter()


def report():
    with open("/proc/self/status") as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    print(json.dumps({"script": sys.argv[0], "peak_rss_mib": round(kib / 1024)}))


time.perf_counter = perf_counter
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
