"""Deployment: integer entropy parameters, int8 synthesis and the real-time decode pipeline."""


def with_frame_models(model, change):
    """A shallow copy of a v2 model whose I- and P-frame models are `change(kind, frame_model)`
    ("intra", "inter"): the deployed variants (int8 synthesis, integer entropy parameters) share the
    weights and leave `model` as it was."""
    import copy

    twin = copy.copy(model)
    twin._modules = dict(model._modules)  # so that replacing intra/inter leaves `model` as it was
    for kind in ("intra", "inter"):
        twin._modules[kind] = change(kind, model._modules[kind])
    return twin
