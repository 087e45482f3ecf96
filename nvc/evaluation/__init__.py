"""`nvc eval`: rate-distortion evaluation against HEVC (x265) and other anchor codecs.

Lives in the product (not `tools/`) because the `nvc eval` command runs it; the protocol is the one
in DESIGN.md, "Evaluation protocol".
"""
