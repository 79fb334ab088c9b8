"""Time ONNX models in DeepSparse 1.8 against a float ONNX Runtime reference, round-robin in this one process.

Run by bench/inference_speed.py with the Python of DeepSparse's own environment (Python <= 3.11, numpy<2; its licence
allows evaluation only). Needs only numpy, onnxruntime and deepsparse; prints one JSON object:
{"deepsparse_version", "ms": {name: median ms}, "native": {name: fraction of ops DeepSparse runs itself}}.

    NM_DISABLE_ANALYTICS=1 .venv-deepsparse/bin/python bench/deepsparse_child.py JOB.json
    JOB.json: {"reference": float.onnx, "models": {name: path}, "input_shape": [1, 3, 224, 224], "rounds": R, "iterations": I}
"""
import json
import sys
import time

import numpy as np


def main():
    job = json.load(open(sys.argv[1]))
    import deepsparse
    import onnxruntime

    image = np.random.default_rng(0).standard_normal(job["input_shape"]).astype("float32")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(job["reference"], options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image}
    runs = {"onnxruntime float32 reference": lambda: session.run(None, feed)}
    native = {}
    for name, path in job["models"].items():
        engine = deepsparse.compile_model(path, batch_size=1, num_cores=1)
        native[name] = engine.fraction_of_supported_ops
        runs[name] = lambda engine=engine: engine.run([image])
    times = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(job["rounds"]):
        for name, run in runs.items():
            for _ in range(job["iterations"]):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * float(np.median(t)) for name, t in times.items()}
    print(json.dumps({"deepsparse_version": deepsparse.__version__, "ms": ms, "native": native}))


if __name__ == "__main__":
    main()
