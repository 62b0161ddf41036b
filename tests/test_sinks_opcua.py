"""--opcua: an asyncua client reads and subscribes to the nodes that edge-classify serves on loopback."""

from __future__ import annotations

import asyncio
import socket

import cv2
import pytest

from conftest import synthetic_image
from edge_runtime.cli import main
from edge_runtime.sinks.opcua import NAMESPACE, parse_endpoint
from test_sinks_mqtt import count_lines, free_port, line_video, read_jsonl, start_cli, wait_until

asyncua = pytest.importorskip("asyncua", reason="asyncua is not installed (the opcua extra, pulled by dev)")


async def read_nodes(port: int, paths: list[str], watch: str | None = None, changes: int = 0):
    """Values of ``EdgeClassify.<path>`` nodes; with ``watch``, also the first ``changes`` data changes of it."""
    from asyncua import Client, ua

    seen: list = []

    class Handler:
        def datachange_notification(self, node, value, data) -> None:
            seen.append(value)

    async with Client(f"opc.tcp://127.0.0.1:{port}/edge-classify/", timeout=10) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        if watch is not None:
            subscription = await client.create_subscription(50, Handler())
            await subscription.subscribe_data_change(client.get_node(ua.NodeId(f"EdgeClassify.{watch}", idx)))
            for _ in range(200):  # at most 10 s
                if len(seen) >= changes:
                    break
                await asyncio.sleep(0.05)
            await subscription.delete()
        values = {path: await client.get_node(ua.NodeId(f"EdgeClassify.{path}", idx)).read_value()
                  for path in paths}
        # the same node by its browse path, as a SCADA client configured by name finds it
        label = await client.nodes.objects.get_child([f"{idx}:EdgeClassify", f"{idx}:Latest", f"{idx}:Label"])
        values["browsed"] = await label.read_value()
    return values, seen


def test_the_endpoint_is_checked():
    assert parse_endpoint("opc.tcp://0.0.0.0:4840") == ("0.0.0.0", 4840)
    for bad in ("opc.tcp://host", "http://host:4840", "4840"):
        with pytest.raises(ValueError, match="opc.tcp://HOST:PORT"):
            parse_endpoint(bad)


def test_a_client_reads_the_latest_label_and_the_counters(tiny_edge_models, tmp_path):
    out, port = tmp_path / "out.jsonl", free_port()
    folder = tmp_path / "drop"
    folder.mkdir()
    # a watched folder keeps the server up once the files are done, so the final values can be read
    for i in range(12):
        cv2.imwrite(str(folder / f"part_{i:02d}.png"), synthetic_image(i % 3, i))
    process = start_cli(["--folder", folder, "--watch", "--poll", 0.1, "--model", tiny_edge_models.tflite,
                         "--output", out, "--opcua", f"opc.tcp://127.0.0.1:{port}"])
    try:
        wait_until(lambda: count_lines(out) >= 12, 90, "12 records", process)
        records = read_jsonl(out)
        labels = ["crazing", "inclusion", "patches"]
        paths = ["Latest.Label", "Latest.Confidence", "Latest.Frame", "Latest.File", "Latest.Unknown",
                 "Counts.Frames", "Counts.Errors", *(f"Counts.{label}" for label in labels), "Status.Model",
                 "Status.Engine", "Status.State"]

        def settled() -> bool:
            values, _ = asyncio.run(read_nodes(port, ["Counts.Frames"]))
            return values["Counts.Frames"] == 12

        wait_until(settled, 10, "the counters to reach 12", interval=0.2)
        values, _ = asyncio.run(read_nodes(port, paths))
        last = records[-1]
        assert values["Latest.Label"] == values["browsed"] == last["label"]
        assert values["Latest.Frame"] == last["frame"] and values["Latest.File"] == last["file"]
        assert values["Latest.Confidence"] == pytest.approx(last["confidence"], abs=1e-6)
        assert values["Counts.Frames"] == 12 and values["Counts.Errors"] == 0
        assert {label: values[f"Counts.{label}"] for label in labels} == {
            label: sum(r["label"] == label for r in records) for label in labels}
        assert values["Status.Model"] == "tiny.tflite" and values["Status.Engine"] == last["engine"]
        assert values["Status.State"] == "running"
        # a subscribed client hears each new result
        cv2.imwrite(str(folder / "part_99.png"), synthetic_image(1, 99))
        values, seen = asyncio.run(read_nodes(port, ["Counts.Frames"], watch="Latest.Sequence", changes=2))
        assert values["Counts.Frames"] == 13 and seen[-1] == 13, seen
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "OPC UA server on" in stderr


def test_a_port_in_use_is_a_one_line_error_and_exit_2(tiny_edge_models, tmp_path, caplog):
    video = line_video(tmp_path / "line.avi", frames=5)
    out = tmp_path / "out.jsonl"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                     "--opcua", f"opc.tcp://127.0.0.1:{port}"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "edge-classify"]
    assert len(errors) == 1 and f"--opcua 127.0.0.1:{port}: cannot listen" in errors[0], errors
    assert "another port" in errors[0] and "\n" not in errors[0]
    assert count_lines(out) == 0
