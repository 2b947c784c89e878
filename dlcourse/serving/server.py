"""A model server in its own process, on a free localhost port: ``with ModelServer("model.onnx") as server:``.

The child process (``python -m dlcourse.serving.server MODEL ...``) loads the model file (``.onnx`` → ONNX Runtime,
``.pt2`` → a ``torch.export`` program run by PyTorch), builds :func:`dlcourse.serving.app.make_app`, binds port 0 on
127.0.0.1 (the kernel picks a free port), prints the address and serves with uvicorn. Its own process, so the load
generator in the notebook does not share a Python interpreter (and its GIL) with the server it measures. The
parent waits for the address, and on leaving the ``with`` block stops the child (SIGTERM, then SIGKILL) — also
when the block raised; a child whose parent dies (a kernel killed mid-cell) stops by itself within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

READY = "dlcourse-serving listening on "


def load_predict(path: str | Path, threads: int = 1):
    """``(predict, n_features)`` for a model file: ``predict`` maps float32 (N, n_features) to the model's output."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name, shape = session.get_inputs()[0].name, session.get_inputs()[0].shape
        return (lambda x: session.run(None, {name: x})[0]), int(shape[-1])
    if path.suffix == ".pt2":
        import torch

        torch.set_num_threads(threads)
        program = torch.export.load(str(path))
        module = program.module()
        n_features = int(next(n for n in program.graph.nodes if n.op == "placeholder"
                              and n.name not in program.graph_signature.inputs_to_parameters).meta["val"].shape[-1])

        def predict(x):
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
        return predict, n_features
    raise ValueError(f"{path}: a model file must be .onnx (ONNX Runtime) or .pt2 (torch.export.save)")


class ModelServer:
    """Serve ``model`` (a .onnx or .pt2 file) from a child process; ``url`` is set inside the ``with`` block.
    Keyword options go to :func:`dlcourse.serving.app.make_app` (``window_s``, ``max_batch``, ``max_rows``,
    ``timeout_s``, ``max_queue``); ``stats`` is an .npz with the training inputs' ``mean`` and ``std`` (drift)."""

    def __init__(self, model: str | Path, *, version: str = "1", threads: int = 1, stats: str | Path | None = None,
                 start_timeout_s: float = 120.0, **options):
        self.args = [sys.executable, "-m", "dlcourse.serving.server", str(model), "--version", version,
                     "--threads", str(threads)]
        if stats is not None:
            self.args += ["--stats", str(stats)]
        for key, value in options.items():
            self.args += [f"--{key.replace('_', '-')}", str(value)]
        self.start_timeout_s, self.url, self.process = start_timeout_s, None, None

    def __enter__(self) -> ModelServer:
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout_s)
        if not line or not line[0].startswith(READY):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the model server did not start within {self.start_timeout_s:.0f} s "
                               f"(exit code {self.process.returncode}); its log ends with:\n{self.log()[-2000:]}")
        self.url = line[0][len(READY):].strip()
        return self

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from .app import DriftMonitor, make_app

    parser = argparse.ArgumentParser(description="serve a .onnx or .pt2 model on a free 127.0.0.1 port")
    parser.add_argument("model")
    parser.add_argument("--version", default="1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stats", default=None)
    parser.add_argument("--window-s", type=float, default=0.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-rows", type=int, default=256)
    parser.add_argument("--max-queue", type=int, default=4096)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    predict, n_features = load_predict(args.model, args.threads)
    drift = None
    if args.stats:
        stats = np.load(args.stats)
        drift = DriftMonitor(stats["mean"], stats["std"])
    app = make_app(predict, n_features=n_features, version=args.version, max_rows=args.max_rows,
                   window_s=args.window_s, max_batch=args.max_batch, max_queue=args.max_queue,
                   timeout_s=args.timeout_s, drift=drift)
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer waits ~40 ms (Nagle's algorithm holding the body until the headers are ACKed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))

    parent = os.getppid()

    async def serve():  # uvicorn's own loop; the address is printed once it accepts connections (after warm-up)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"{READY}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        while not task.done():  # a server whose parent died (a killed kernel) stops instead of living on
            if os.getppid() != parent:
                server.should_exit = True
            await asyncio.sleep(0.5)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
