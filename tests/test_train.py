"""The training script trains, checkpoints, resumes and exports weights that code exactly."""

import pytest
import torch

from nvc.model import load_weights
from tools import train_inter
from nvc.model import yuv_mse
from tools.train import main


def test_yuv_mse_weights_luma_six_to_one():
    x = torch.zeros(1, 6, 4, 4)
    y = x.clone()
    y[:, :4] += 0.1  # luma error only
    assert yuv_mse(y, x).item() == pytest.approx(6 * 0.01 / 8, rel=1e-5)


def test_train_resume_export(tmp_path, capsys):
    args = ["--out", str(tmp_path / "run"), "--batch", "2", "--patch", "64", "--checkpoint-every", "1",
            "--export", str(tmp_path / "w.pt")]
    main(args + ["--steps", "2"])
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 2
    main(args + ["--steps", "3"])
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3
    model = load_weights(tmp_path / "w.pt").intra
    x = torch.rand(1, 6, 32, 32)
    streams, rec = model.compress(x, None, 2)
    assert torch.equal(model.decompress(streams, None, 64, 64, 2).x_hat, rec.x_hat)


def test_inter_training_runs_resumes_and_exports_a_video_model(tmp_path, capsys):
    args = ["--out", str(tmp_path / "run"), "--batch", "1", "--patch", "64", "--length", "3",
            "--clip", "carphone_pristine.mp4", "--checkpoint-every", "1", "--export", str(tmp_path / "w.pt")]
    train_inter.main(args + ["--steps", "1"])
    train_inter.main(args + ["--steps", "2"])
    assert "resumed from" in capsys.readouterr().out
    model = load_weights(tmp_path / "w.pt")
    x = torch.rand(2, 6, 32, 32)
    _, ref = model.intra.compress(x[:1], None, 2)
    streams, rec = model.inter.compress(x[1:], ref, 2)
    assert torch.equal(model.inter.decompress(streams, ref, 64, 64, 2).x_hat, rec.x_hat)


def test_v2_training_starts_from_the_shipped_weights_and_trains_i_frames_alone(tmp_path, capsys, carphone):
    """A new machine resumes from the shipped fp16 weights (their CDF buffers sized as saved);
    `--length 1` trains the I-frame model on single frames and leaves the P-frame model as it was."""
    from nvc.models.registry import entry_by_name
    from tools import train_v2

    data = tmp_path / "clips"
    data.mkdir()
    (data / "clip.mp4").symlink_to(carphone)
    args = ["--batch", "1", "--patch", "128", "--length", "1", "--data", str(data), "--out", str(tmp_path / "run"),
            "--export", str(tmp_path / "w.pt"), "--photo-share", "0", "--segments", "1", "--segment", "6",
            "--no-sample-clips", "--threads", "1", "--checkpoint-every", "1"]
    train_v2.main(args + ["--steps", "1"])
    assert "starting from the shipped weights" in capsys.readouterr().out
    train_v2.main(args + ["--steps", "2"])  # its checkpoint holds sized CDF tables; a fresh model's are empty
    assert "resumed from" in capsys.readouterr().out
    shipped, trained = load_weights(entry_by_name("lean-mc-yuv420-v2").weights_path), load_weights(tmp_path / "w.pt")
    assert not torch.equal(shipped.intra.g_s.out.weight, trained.intra.g_s.out.weight)
    assert torch.equal(shipped.inter.g_s.out.weight, trained.inter.g_s.out.weight)


def test_v2_training_codes_runs_at_the_encoders_schedule(tmp_path, capsys, carphone):
    """`--quality-schedule`: each run's frames at the levels `nvc.Encoder` gives them (I-frame +3, the
    4th P-frame +1, capped), and a run of 5 frames trains with them."""
    from nvc.gop import quality_schedule
    from tools import train_v2

    levels = train_v2.frame_levels(torch.tensor([0, 5]), 6, quality_schedule("lean-mc-yuv420-v2"), 8)
    assert levels.T.tolist() == [[3, 0, 0, 0, 1, 0], [7, 5, 5, 5, 6, 5]]
    data = tmp_path / "clips"
    data.mkdir()
    (data / "clip.mp4").symlink_to(carphone)
    train_v2.main(["--batch", "1", "--patch", "128", "--length", "5", "--data", str(data), "--out", str(tmp_path / "run"),
                   "--export", str(tmp_path / "w.pt"), "--photo-share", "0", "--segments", "1", "--segment", "6",
                   "--no-sample-clips", "--threads", "1", "--steps", "1", "--quality-schedule"])
    assert (tmp_path / "w.pt").exists()


def test_v2_training_with_a_lead_trains_p_frames_from_a_drifted_reference():
    """`--lead`: the I-frame and the first P-frames are coded without gradients and left out of the
    loss, so only the P-frame model learns, from a reference that has been through earlier P-frames."""
    from nvc.lean_model import LeanVideoModel
    from nvc.models.lean import LeanConfig
    from tools.train_v2 import sequence_loss

    torch.manual_seed(0)
    model = LeanVideoModel(LeanConfig())
    x = torch.rand(1, 4, 6, 32, 32)
    loss, logged = sequence_loss(model, x, torch.tensor([2]), lead=2)
    loss.backward()
    assert all(p.grad is None for p in model.intra.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inter.parameters())
    model.zero_grad(set_to_none=True)
    loss, _ = sequence_loss(model, x, torch.tensor([2]))  # without: the I-frame model learns too
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.intra.parameters())


def test_entropy_training_caches_the_encoders_latents_and_trains_only_the_p_latent_codec(tmp_path, carphone):
    """`tools.train_entropy`: the cache holds each P coding's latent and prior (and a repeated
    hyper-latent's z_hat); training with `--inter-steps 4` changes only the P latent codec, and the
    exported weights decode in 4 steps."""
    from nvc.models.registry import entry_by_name
    from tools import train_entropy

    out = tmp_path / "run"
    train_entropy.main(["cache", str(carphone), "--out", str(out), "--frames", "3", "--crop", "128x128",
                        "--qualities", "2", "--levels-per-clip", "1", "--repeats"])
    samples = torch.load(out / "cache" / "carphone_pristine.pt", weights_only=True)
    assert len(samples) >= 2 and samples[0]["y"].shape == (1, 96, 8, 8) and samples[0]["mv"].shape == (1, 2, 8, 8)
    # the second P-frame is also coded with its reference's hyper-latent, kept with that z_hat
    assert any(s.get("z_hat") is not None and s["z_hat"].shape == (1, 64, 2, 2) for s in samples)
    train_entropy.main(["train", "--out", str(out), "--steps", "2", "--batch", "2", "--crop", "8",
                        "--inter-steps", "4", "--snapshot-every", "1"])
    train_entropy.main(["export", str(out / "snap" / "step2.pt"), "--to", str(tmp_path / "w.pt")])
    shipped, trained = load_weights(entry_by_name("lean-mc-yuv420-v2").weights_path), load_weights(tmp_path / "w.pt")
    assert trained.config.inter_steps == 4 and len(trained.inter.latent_codec.context) == 3
    assert torch.equal(shipped.intra.g_s.out.weight, trained.intra.g_s.out.weight)
    assert torch.equal(shipped.inter.g_a.net[0].weight, trained.inter.g_a.net[0].weight)
    assert not torch.equal(shipped.inter.latent_codec.base[0].weight, trained.inter.latent_codec.base[0].weight)
    x = torch.rand(2, 6, 32, 32)
    with torch.no_grad():
        _, ref = trained.intra.compress(x[:1], None, 2)
        streams, rec = trained.inter.compress(x[1:], ref, 2)
        assert 1 + max(s.step for s in streams if s.kind.name == "LATENT") == 4
        assert torch.equal(trained.inter.decompress(streams, ref, 64, 64, 2).x_hat, rec.x_hat)


def test_intra_entropy_training_caches_g_a_latents_at_the_i_levels_and_trains_only_the_i_latent_codec(tmp_path, carphone):
    """`tools.train_entropy --frame intra`: the cache holds g_a's latent of every --stride-th frame at
    two I-frame levels; training changes the I latent codec and nothing else, and its I-frames round-trip."""
    from nvc.models.registry import entry_by_name
    from tools import train_entropy

    out = tmp_path / "run"
    train_entropy.main(["cache", str(carphone), "--frame", "intra", "--out", str(out), "--frames", "4", "--stride", "2",
                        "--crop", "128x128", "--qualities", "0", "1", "2"])
    samples = torch.load(out / "cache" / "carphone_pristine.pt", weights_only=True)
    assert len(samples) == 4 and samples[0]["y"].shape == (1, 96, 8, 8) and set(samples[0]) == {"y"}
    assert not torch.equal(samples[0]["y"], samples[1]["y"])  # levels 3 and 4 of the first frame: different gains
    train_entropy.main(["train", "--frame", "intra", "--out", str(out), "--steps", "2", "--batch", "2", "--crop", "8",
                        "--lr", "1e-2"])
    train_entropy.main(["export", str(out / "snap" / "step2.pt"), "--to", str(tmp_path / "w.pt")])
    shipped, trained = load_weights(entry_by_name("lean-mc-yuv420-v2").weights_path), load_weights(tmp_path / "w.pt")
    assert torch.equal(shipped.intra.g_a.net[0].weight, trained.intra.g_a.net[0].weight)
    assert torch.equal(shipped.inter.latent_codec.base[0].weight, trained.inter.latent_codec.base[0].weight)
    assert not torch.equal(shipped.intra.latent_codec.base[0].weight, trained.intra.latent_codec.base[0].weight)
    x = torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        streams, rec = trained.intra.compress(x, None, 4)
        assert torch.equal(trained.intra.decompress(streams, None, 128, 128, 4).x_hat, rec.x_hat)
