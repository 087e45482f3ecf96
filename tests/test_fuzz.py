"""A short, fixed-seed run of the decoder fuzzer (`tools/fuzz.py`; the 10,000-case run is done by hand)."""

from tools.fuzz import MUTATIONS, run_fuzz


def test_fuzz_short_run(tmp_path):
    summary = run_fuzz(cases=220, seed=11, timeout=20, work=tmp_path, threads=1)
    text = summary.text()
    for kind in ("uncaught", "multiline", "hang", "leftover"):
        assert summary.count(kind) == 0, text
    # Known, not yet fixed: a header resealed with a larger frame size than the packets were coded
    # for makes CompressAI's rANS decoder (no bounds checks) read past the end of a stream, which
    # may crash the process (SIGSEGV, depending on what lies beyond). Any other crash fails here.
    crashes = [f for f in summary.failures if f.kind == "crash"]
    assert all("header width" in f.mutation or "header height" in f.mutation for f in crashes), text
    assert summary.cases == 220 and set(summary.by_mutation) >= set(MUTATIONS)
    assert summary.decoded > 30 and summary.refused > 30  # the cases reach the decoder and its checks
    assert list(tmp_path.iterdir()) == []
