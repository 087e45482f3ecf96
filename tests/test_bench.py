"""`nvc bench` and `tools.bench FILE`: what they report (not how fast: nothing here is timed)."""

import inspect
import json

import pytest

from nvc.cli import main
from nvc.models.registry import DEFAULT_MODEL
from nvc.transcode import encode_video

STAGES = {"demux", "decode", "to_frame"}


def test_bench_encodes_then_decodes_serial_and_pipelined(tmp_path, carphone, capsys):
    report, kept = tmp_path / "bench.json", tmp_path / "kept.nvc"
    assert main(["bench", str(carphone), "--encode", "--frames", "3", "--model", "lean-mc-yuv420-v2",
                 "--keep", str(kept), "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    e = r["encode"]
    assert (e["frames"], e["size"], e["model"]) == (3, "176x144", "lean-mc-yuv420-v2")
    assert e["encode_fps"] > 0 and e["bytes"] == kept.stat().st_size and e["psnr_yuv"] > 15
    assert r["stream"]["frame_count"] == 3 and r["stream"]["model"] == "lean-mc-yuv420-v2"
    assert [d["mode"] for d in r["decode"]] == ["serial", "pipelined"]
    for d in r["decode"]:
        assert d["frames"] == 3 and d["fps"] > 0 and d["model_load_seconds"] >= 0
        assert set(d["stages_ms_per_frame"]) == STAGES
        assert d["first_frame_seconds"] <= d["seconds"]
    assert r["decode"][1]["torch_threads"] == 1  # the pipelined decoder's setting, recorded
    out = capsys.readouterr().out
    assert "| serial | 3 |" in out and "| pipelined | 3 |" in out


def test_tools_bench_with_a_file_is_nvc_bench(small_nvc, tmp_path, capsys):
    from tools.bench import main as tools_main

    report = tmp_path / "bench.json"
    tools_main([str(small_nvc), "--mode", "serial", "--frames", "2", "--json", str(report)])
    r = json.loads(report.read_text())
    assert [(d["mode"], d["frames"]) for d in r["decode"]] == [("serial", 2)]
    assert "encode" not in r and r["stream"]["model"] == DEFAULT_MODEL


def test_bench_refuses_a_missing_file_in_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "none.nvc")]) == 1
    assert capsys.readouterr().err == f"nvc: error: input not found: {tmp_path / 'none.nvc'}\n"


def test_encode_engine_flag_is_passed_only_when_given(tmp_path, carphone, capsys):
    out = tmp_path / "e.nvc"
    code = main(["encode", str(carphone), "-o", str(out), "--frames", "1", "--engine", "torch", "-q",
                 "--model", "lean-mc-yuv420-v2"])
    if "engine" in inspect.signature(encode_video).parameters:
        assert code == 0 and out.exists()
    else:  # an encoder without engine= (before int8 synthesis is wired in): refused in one line
        assert code == 1 and "--engine" in capsys.readouterr().err and not out.exists()


def test_bench_memory_decodes_one_looped_stream(tmp_path, carphone):
    from tools.bench_memory import main as memory_main

    report = tmp_path / "memory.json"
    memory_main(["--clip", str(carphone), "--source-frames", "4", "--intra-period", "2", "--size", "64x48",
                 "--frames", "40", "--every", "10", "--json", str(report)])
    r = json.loads(report.read_text())
    assert r["frames"] == 40 and [s["frames"] for s in r["samples"]] == [10, 20, 30, 40]
    assert r["growth_mb"] == round(r["rss_last_mb"] - r["rss_first_sample_mb"], 2)


def test_bench_rans_reports_native_speed_per_thread_count():
    from nvc.entropy import native
    from tools.bench_rans import run

    if not native.available():
        pytest.skip(f"native coder unavailable: {native.unavailable_reason()}")
    r = run(20_000, 4, 1)
    assert set(r["native_msym_s"]["decode"]) == {"1", "2"} and all(v > 0 for v in r["native_msym_s"]["decode"].values())
    assert set(r["targets"]) == {"decode_1_thread_msym_s", "decode_2_threads_speedup"}
