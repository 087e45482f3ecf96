"""nvc: a learned video codec. Python API in the style of PyAV:

    import nvc
    with nvc.open("clip.nvc") as f:
        for frame in f:            # nvc.YUVFrame with .y .u .v uint8 planes
            ...
    with nvc.open("out.nvc", "w", width=1280, height=720, fps=25, quality=3) as enc:
        enc.encode(frame)          # the file is completed by flush() / leaving the block
"""

import warnings
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


def quiet_import(module: str):
    """Import a module of nvc that loads compressai without its `torch.jit.script` FutureWarning.

    compressai 1.2 decorates functions with `torch.jit.script`, which recent PyTorch deprecates: the
    warning is about compressai, not the caller's code, and is filtered only while it is imported.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        return import_module(module)


def __getattr__(name: str):
    # Imported on first use, so that `import nvc`, `nvc --help` and `nvc info` start without torch.
    if name in _EXPORTS:
        return getattr(quiet_import(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nvc' has no attribute {name!r}")
