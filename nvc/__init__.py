"""nvc: a learned video codec. Python API in the style of PyAV:

    import nvc
    with nvc.open("clip.nvc") as f:
        for frame in f:            # nvc.YUVFrame with .y .u .v uint8 planes
            ...
    with nvc.open("out.nvc", "w", width=1280, height=720, fps=25, quality=3) as enc:
        enc.encode(frame)          # the file is completed by flush() / leaving the block
"""

from importlib import import_module

_EXPORTS = {
    "DEFAULT_QUALITY": "nvc.codec",
    "Encoder": "nvc.codec",
    "Reader": "nvc.codec",
    "open": "nvc.codec",
    "NvcError": "nvc.errors",
    "YUVFrame": "nvc.frames",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Imported on first use, so that `nvc --help` and the CLI start without loading torch.
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nvc' has no attribute {name!r}")
