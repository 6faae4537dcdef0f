"""Checkpoints of `memops train`: written atomically, loaded weights-only (never executes code)."""

import os

import torch

FORMAT = "memops-checkpoint/2"


def save_checkpoint(path, payload):
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """The checkpoint dict, loaded weights-only (tensors and plain containers; never executes code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"memops: no checkpoint at {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"memops: {path} is not a memops checkpoint (format {FORMAT})")
    return ckpt


def model_from_checkpoint(path, device="cpu", backend=None):
    """(model in eval mode, its recipe, the checkpoint dict) from a checkpoint of `memops train`."""
    from .recipes import recipe_class  # recipes import the models: only when one is rebuilt

    ckpt = load_checkpoint(path, device)
    recipe = recipe_class(ckpt["task"]).restore(ckpt["task"], ckpt["recipe"])
    model = recipe.build(backend=backend).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, recipe, ckpt
