"""What the line outputs cost per frame on this PC: a video classified without them and with all of them.

    python deploy/sink_cost.py                          # 300-frame 64x48 video, the shipped model, 3 rounds
    python deploy/sink_cost.py --video line.avi --model model_int8.onnx --rounds 5

Each round classifies the video twice in this process, without line outputs and with --mqtt (a Mosquitto
started here on a free loopback port, or --mqtt URL), --opcua, --serve (with a client reading the MJPEG stream
and /metrics) and an alarm rule, and compares the wall time per frame (median over the rounds). It also times
the outputs' ``emit`` calls on the classification thread (their direct share) and the CPU time of the whole
process while the loop runs (what their threads cost too; set-up and shut-down are paid once and left out).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edge_runtime.cli as cli  # noqa: E402
from edge_runtime.cli import run  # noqa: E402
from edge_runtime.line import LineOutputs  # noqa: E402
from edge_runtime.pipeline import StopFlag  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for i in range(frames):
        base = np.sin(np.arange(64) * (0.2 + 0.1 * (i % 3)))[None, :] * 40 + 100
        writer.write(np.clip(base + rng.normal(0, 8, (48, 64)), 0, 255).astype(np.uint8)[..., None].repeat(3, 2))
    writer.release()
    return path


class LoopCpu:
    """CPU time of this process while the classification loop runs (set-up and shut-down left out: the
    OPC UA address space, the broker connection and the final flush are paid once, not per frame)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._run_pipeline = cli.run_pipeline

    def __enter__(self) -> LoopCpu:
        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return self._run_pipeline(*args, **kwargs)
            finally:
                self.seconds = time.process_time() - started

        cli.run_pipeline = timed
        return self

    def __exit__(self, *exc: object) -> None:
        cli.run_pipeline = self._run_pipeline


class EmitTimer:
    """Wraps the line outputs' emit methods and adds up their time on the classification thread."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._enter = LineOutputs.__enter__

    def __enter__(self) -> EmitTimer:
        timer = self

        def enter(outputs: LineOutputs) -> LineOutputs:
            result = timer._enter(outputs)
            for sink in outputs.sinks:
                emit = sink.emit

                def timed(res, _emit=emit) -> None:
                    started = time.perf_counter()
                    _emit(res)
                    timer.seconds += time.perf_counter() - started

                sink.emit = timed
            return result

        LineOutputs.__enter__ = enter
        return self

    def __exit__(self, *exc: object) -> None:
        LineOutputs.__enter__ = self._enter


def viewer(port: int, stop: threading.Event) -> None:
    """An operator watching the page: the MJPEG stream, /status.json and /metrics once a second."""
    base = f"http://127.0.0.1:{port}"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{base}/stream.mjpg", timeout=5) as stream:
                last = 0.0
                while not stop.is_set() and stream.read1(65536):
                    if time.monotonic() - last > 1.0:
                        last = time.monotonic()
                        urllib.request.urlopen(f"{base}/status.json", timeout=5).read()
                        urllib.request.urlopen(f"{base}/metrics", timeout=5).read()
        except OSError:
            stop.wait(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", help="video file (default: a generated 300-frame 64x48 video)")
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mqtt", help="broker URL (default: a Mosquitto started here)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sink-cost-"))
    video = args.video or str(make_video(work / "line.avi", args.frames))
    broker = None
    mqtt = args.mqtt
    if mqtt is None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        port = free_port()
        (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([binary, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        mqtt = f"mqtt://127.0.0.1:{port}/cost/line"
    common = dict(video=video, model=args.model, output=str(work / "out.jsonl"), overwrite=True)
    run(**common, frames=20)  # warm-up (engine choice, caches)
    plain, line, emit_share, cpu_plain, cpu_line = [], [], [], [], []
    try:
        for _ in range(args.rounds):
            with LoopCpu() as cpu:
                s = run(**common)
            cpu_plain.append(cpu.seconds / s.frames)
            plain.append(s.elapsed_s / s.frames)
            port, stop = free_port(), threading.Event()
            watcher = threading.Thread(target=viewer, args=(port, stop), daemon=True)
            watcher.start()
            with LoopCpu() as cpu, EmitTimer() as timer:
                s = run(**common, mqtt=mqtt, opcua=f"opc.tcp://127.0.0.1:{free_port()}", serve=str(port),
                        alarms=["unknown:20/100", "camera-lost:10"], stop=StopFlag())
            cpu_line.append(cpu.seconds / s.frames)
            stop.set()
            watcher.join(10)
            line.append(s.elapsed_s / s.frames)
            emit_share.append(timer.seconds / s.frames)
            print(f"round: without {plain[-1] * 1000:.2f} ms/frame, with all outputs {line[-1] * 1000:.2f} ms/frame "
                  f"(emit {emit_share[-1] * 1000:.3f} ms/frame); CPU {cpu_plain[-1] * 1000:.2f} -> "
                  f"{cpu_line[-1] * 1000:.2f} ms/frame; mqtt {s.outputs.get('mqtt')}", flush=True)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    a, b, e = statistics.median(plain), statistics.median(line), statistics.median(emit_share)
    ca, cb = statistics.median(cpu_plain), statistics.median(cpu_line)
    print(f"median over {args.rounds} rounds of {args.frames} frames: without outputs {a * 1000:.2f} ms/frame, "
          f"with MQTT + OPC UA + page (watched) + alarms {b * 1000:.2f} ms/frame: {100 * (b - a) / a:+.1f} % "
          f"wall time; emit calls on the classification thread {e * 1000:.3f} ms/frame ({100 * e / a:.1f} %); CPU time of the process {ca * 1000:.2f} -> {cb * 1000:.2f} ms/frame "
          f"({100 * (cb - ca) / ca:+.1f} %, includes the viewer's HTTP client in this process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
