"""The CLI and the files it touches: never the input, never an existing file without -y, devices and
pipes written in place, permissions from the umask, SIGTERM cleanup, truncated files, stdin, and a
start without torch where none is needed (issue 11)."""

import io
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from nvc.cli import main
from nvc.output import Y4MWriter
from tests.conftest import crop

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.fixture
def tiny_y4m(tmp_path, carphone_frames) -> Path:
    """Two real 64x64 frames as Y4M."""
    path = tmp_path / "tiny.y4m"
    w = Y4MWriter(str(path), 64, 64, Fraction(25))
    for f in carphone_frames[:2]:
        w.write(crop(f, 64, 64))
    w.close()
    return path


@pytest.fixture
def tiny_nvc(tmp_path, tiny_y4m) -> Path:
    out = tmp_path / "tiny.nvc"
    assert main(["encode", str(tiny_y4m), "-o", str(out), "-q"]) == 0
    return out


def env_one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# 1. The output is never the input.

def test_refuses_output_that_is_the_input(tmp_path, capsys, tiny_y4m, tiny_nvc):
    source = tiny_y4m.read_bytes()
    os.link(tiny_y4m, tmp_path / "hard.y4m")
    (tmp_path / "soft.y4m").symlink_to(tiny_y4m)
    (tmp_path / "sub").mkdir()
    for other in (tiny_y4m, tmp_path / "sub" / ".." / "tiny.y4m", tmp_path / "hard.y4m", tmp_path / "soft.y4m"):
        code, msg = run(capsys, "encode", tiny_y4m, "-o", other, "-y", "--frames", "1")
        assert code == 1 and msg == f"nvc: error: output {other} is the input {tiny_y4m}; choose another output name"
        code, msg = run(capsys, "encode", other, "-o", tiny_y4m, "-y", "--frames", "1")
        assert code == 1 and "is the input" in msg
    assert tiny_y4m.read_bytes() == source and (tmp_path / "soft.y4m").is_symlink()
    coded = tiny_nvc.read_bytes()
    code, msg = run(capsys, "decode", tiny_nvc, "-o", tiny_nvc, "-y", "-f", "y4m")
    assert code == 1 and "is the input" in msg and tiny_nvc.read_bytes() == coded
    assert leftovers(tmp_path) == []


# 2. Devices and pipes are written in place, never replaced; -f null writes nothing.

def test_decode_to_dev_null_leaves_the_device(capsys, tiny_nvc):
    before = os.stat("/dev/null")
    assert run(capsys, "decode", tiny_nvc, "-o", "/dev/null")[0] == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert run(capsys, "encode", tiny_nvc.with_name("tiny.y4m"), "-o", "/dev/null", "-q")[0] == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_decode_null_sink_writes_nothing(tmp_path, capsys, tiny_nvc):
    before = sorted(tmp_path.iterdir())
    code, msg = run(capsys, "decode", tiny_nvc, "-f", "null")
    assert code == 0 and msg.startswith("decoded 2 frames 64x64")
    assert sorted(tmp_path.iterdir()) == before


def test_decode_into_a_named_pipe(tmp_path, capsys, tiny_nvc):
    fifo = tmp_path / "fifo.y4m"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _ = run(capsys, "decode", tiny_nvc, "-o", fifo)
    reader.join(30)
    assert code == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode) and received
    assert received[0].startswith(b"YUV4MPEG2 W64 H64") and received[0].count(b"FRAME\n") == 2
    assert leftovers(tmp_path) == []


# 3. SIGTERM cleans up as Ctrl-C does and exits 143.

def _terminate_when_temp_appears(argv: list[str], feed: bytes, folder: Path, name: str) -> tuple[int, str]:
    """Run nvc with `feed` on a stdin that then stays open, SIGTERM it once its temporary output exists."""
    proc = subprocess.Popen([sys.executable, "-m", "nvc.cli", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_one_thread())
    try:
        proc.stdin.write(feed)
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while not [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.05)
        time.sleep(0.3)  # let it block on stdin (a signal mid-frame must clean up as well)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        return code, proc.stderr.read().decode()
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()


def test_sigterm_mid_decode_removes_the_temporary_output(tmp_path, tiny_nvc):
    data = tiny_nvc.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    code, err = _terminate_when_temp_appears(["decode", "-", "-o", str(out / "x.y4m")], data[:-50], out, "x.y4m")
    assert code == 143 and err.strip().endswith("nvc: terminated")
    assert list(out.iterdir()) == []


def test_sigterm_mid_encode_from_stdin_removes_the_temporary_output(tmp_path, tiny_y4m):
    data = tiny_y4m.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    code, err = _terminate_when_temp_appears(["encode", "-", "-o", str(out / "x.nvc")], data[: len(data) // 2 + 10],
                                             out, "x.nvc")
    assert code == 143 and err.strip().endswith("nvc: terminated")
    assert list(out.iterdir()) == []


# 4. -y overwrites, -n never does, neither refuses an existing output; never a prompt.

def test_existing_output_needs_y(tmp_path, capsys, tiny_y4m, tiny_nvc):
    coded = tiny_nvc.read_bytes()
    code, msg = run(capsys, "encode", tiny_y4m, "-o", tiny_nvc, "--quality", "0")
    assert code == 1 and msg == f"nvc: error: output {tiny_nvc} exists (use -y to overwrite it)"
    code, msg = run(capsys, "encode", tiny_y4m, "-o", tiny_nvc, "--quality", "0", "-n")
    assert code == 1 and msg == f"nvc: error: output {tiny_nvc} exists and -n was given"
    assert tiny_nvc.read_bytes() == coded
    assert run(capsys, "encode", tiny_y4m, "-o", tiny_nvc, "--quality", "0", "-y", "-q")[0] == 0
    assert tiny_nvc.read_bytes() != coded
    out = tmp_path / "o.y4m"
    out.write_bytes(b"keep")
    assert run(capsys, "decode", tiny_nvc, "-o", out)[0] == 1 and out.read_bytes() == b"keep"
    assert run(capsys, "decode", tiny_nvc, "-o", out, "-y")[0] == 0 and out.read_bytes().startswith(b"YUV4MPEG2")
    assert leftovers(tmp_path) == []


def test_y_and_n_exclude_each_other_and_help_states_the_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["encode", "in.y4m", "-o", "o.nvc", "-y", "-n"])
    assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "without -y or -n an existing output is refused" in " ".join(capsys.readouterr().out.split())


# 5. A truncated file: the good frames before the cut are kept with --conceal, named without it.

@pytest.mark.parametrize("cut", ["end mark", "middle"])
def test_truncated_file(tmp_path, capsys, tiny_nvc, cut):
    data = tiny_nvc.read_bytes()
    bad = tmp_path / "cut.nvc"
    bad.write_bytes(data[:-1] if cut == "end mark" else data[: len(data) - 40])
    good = 2 if cut == "end mark" else 1
    out = tmp_path / "o.y4m"
    code, msg = run(capsys, "decode", bad, "-o", out)
    kept = "the 2 frames before it are" if good == 2 else "the frame before it is"
    assert code == 1 and msg.endswith(f"; {kept} good, --conceal keeps them") and not out.exists()
    assert leftovers(tmp_path) == []
    code = main(["decode", str(bad), "-o", str(out), "--conceal"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("nvc: warning:") == 1 and f"{kept} kept" in err
    assert out.read_bytes().count(b"FRAME\n") == good


def test_truncated_file_to_stdout_keeps_the_frames_before_the_cut(tmp_path, capsysbinary, tiny_nvc):
    bad = tmp_path / "cut.nvc"
    bad.write_bytes(tiny_nvc.read_bytes()[:-40])
    code = main(["decode", str(bad), "-o", "-"])
    out, err = capsysbinary.readouterr()
    assert code == 1 and out.count(b"FRAME\n") == 1
    assert err.decode().strip().endswith("the frame before it is good, --conceal keeps them")


# 6. Permissions from the umask, not mkstemp's 0600 / mkdtemp's 0700.

@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_umask_permissions(tmp_path, capsys, tiny_y4m, mask):
    old = os.umask(mask)
    try:
        assert run(capsys, "encode", tiny_y4m, "-o", tmp_path / "m.nvc", "-q")[0] == 0
        assert run(capsys, "decode", tmp_path / "m.nvc", "-o", tmp_path / "m.y4m", "-q")[0] == 0
        assert run(capsys, "decode", tmp_path / "m.nvc", "-o", tmp_path / "pngs", "-q")[0] == 0
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "m.nvc") == mode(tmp_path / "m.y4m") == 0o666 & ~mask
    assert mode(tmp_path / "pngs") == 0o777 & ~mask
    assert mode(tmp_path / "pngs" / "000000.png") == 0o666 & ~mask


def test_a_replaced_file_keeps_its_permissions(tmp_path, capsys, tiny_nvc):
    out = tmp_path / "o.yuv"
    out.write_bytes(b"old")
    out.chmod(0o600)
    assert run(capsys, "decode", tiny_nvc, "-o", out, "-y")[0] == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


# 9. Y4M on stdin.

def test_encode_reads_y4m_from_stdin(tmp_path, capsys, monkeypatch, tiny_y4m):
    assert run(capsys, "encode", tiny_y4m, "-o", tmp_path / "file.nvc", "-q")[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(tiny_y4m.read_bytes())))
    assert run(capsys, "encode", "-", "-o", tmp_path / "pipe.nvc", "-q")[0] == 0
    assert (tmp_path / "pipe.nvc").read_bytes() == (tmp_path / "file.nvc").read_bytes()


# 10. Cheap refusals and commands that need no torch.

def test_info_help_and_bad_arguments_import_no_torch(tmp_path, tiny_nvc):
    script = f"""
import sys
import nvc
from nvc.cli import main
for argv in (["--help"], ["--version"], ["info", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
assert main(["info", {str(tiny_nvc)!r}]) == 0
assert main(["encode", {str(tiny_nvc)!r}, "-o", {str(tmp_path / 'q.nvc')!r}, "--quality", "99"]) == 1
assert main(["encode", {str(tiny_nvc)!r}, "-o", {str(tiny_nvc)!r}, "-y"]) == 1
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "compressai"))
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env_one_thread(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "--quality must be 0..7 for lean-mc-yuv420-v2, got 99" in proc.stderr and "is the input" in proc.stderr
    assert "model lean-mc-yuv420-v2 (id 3)" in proc.stdout


def test_quality_table_matches_the_shipped_weights():
    from nvc.cli import _quality_levels
    from nvc.model import load_shipped
    from nvc.models.registry import entry_by_name

    for name, levels in _quality_levels().items():
        assert load_shipped(entry_by_name(name))[0].config.quality_levels == levels


# 11. Version, summaries, progress bars, help.

def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and re.match(r"nvc \S+, \.nvc format version \d+", capsys.readouterr().out)


def test_summaries_and_progress(tmp_path, capsys, tiny_y4m):
    code = main(["encode", str(tiny_y4m), "-o", str(tmp_path / "s.nvc"), "--intra-period", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err  # stderr is not a terminal: no bar
    assert re.search(r"\d+ bytes, [\d.]+ bpp, [\d.]+ kb/s at 25 fps", err) and "model load" in err
    mean = float(re.search(r"PSNR-YUV ([\d.]+) dB", err).group(1))
    code = main(["encode", str(tiny_y4m), "-o", str(tmp_path / "s.nvc"), "--intra-period", "1", "-y", "--progress"])
    err = capsys.readouterr().err
    assert code == 0 and "encode:" in err
    assert float(re.findall(r"psnr=([\d.]+)", err)[-1]) == pytest.approx(mean, abs=0.011)  # the running mean
    code = main(["decode", str(tmp_path / "s.nvc"), "-o", str(tmp_path / "s.y4m")])
    err = capsys.readouterr().err
    assert code == 0 and re.search(r"decoded 2 frames 64x64 in [\d.]+ s, [\d.]+ fps, model load [\d.]+ s", err)


def test_info_help_has_a_description_and_only_options_it_uses(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    out = capsys.readouterr().out
    assert "Print an .nvc file's header" in out
    assert "--device" not in out and "--quiet" not in out
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "override the rate" in " ".join(capsys.readouterr().out.split())


# 12. No FutureWarning from compressai through the Python API.

def test_api_emits_no_future_warning(tmp_path, carphone_frames):
    frame = crop(carphone_frames[0], 64, 64)
    np_file = tmp_path / "f.npy"
    import numpy as np

    np.savez(np_file, y=frame.y, u=frame.u, v=frame.v)
    script = f"""
import warnings
warnings.simplefilter("error", FutureWarning)
import numpy as np
import nvc
d = np.load({str(np_file) + ".npz"!r})
with nvc.open({str(tmp_path / 'w.nvc')!r}, "w", width=64, height=64) as enc:
    enc.encode(nvc.YUVFrame(d["y"], d["u"], d["v"]))
with nvc.open({str(tmp_path / 'w.nvc')!r}) as f:
    assert len(list(f)) == 1
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env_one_thread(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr


def test_encode_with_integer_entropy_parameters(tmp_path, capsys, tiny_y4m):
    """--entropy integer is recorded in the stream (nvc info shows it) and decodes; models without
    the integer path refuse it in one line."""
    out = tmp_path / "int.nvc"
    assert main(["encode", str(tiny_y4m), "-o", str(out), "--entropy", "integer", "-q"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "synthesis torch, entropy parameters integer" in capsys.readouterr().out
    assert main(["decode", str(out), "-f", "null", "-q"]) == 0
    assert main(["encode", str(tiny_y4m), "-o", str(tmp_path / "v1.nvc"), "--entropy", "integer",
                 "--model", "tcm-yuv420-v1", "-q"]) == 1
    assert "only lean-mc-yuv420-v2 has them" in capsys.readouterr().err
    assert not (tmp_path / "v1.nvc").exists()


def test_flat_quality_codes_every_frame_at_the_level_asked_for(tmp_path, capsys, tiny_y4m):
    """By default v2's I-frame goes 3 levels above --quality (nvc.gop.QualitySchedule); --flat-quality
    keeps every packet at --quality. Both decode."""
    from nvc.container import StreamHeader, read_packets

    levels = {}
    for flag in ([], ["--flat-quality"]):
        out = tmp_path / f"q{len(flag)}.nvc"
        assert main(["encode", str(tiny_y4m), "-o", str(out), "--quality", "2", "-q", *flag]) == 0
        with open(out, "rb") as f:
            header = StreamHeader.read(f)
            levels[bool(flag)] = [p.quality for p in read_packets(f, header)]
        assert header.quality == 2
        assert main(["decode", str(out), "-f", "null", "-q"]) == 0
    assert levels == {False: [5, 2], True: [2, 2]}
