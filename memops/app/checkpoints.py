"""Checkpoints of `memops train`: a format version, the run's whole configuration and a checksum of the
tensor data; written atomically, loaded weights-only (never executes code) and verified."""

import glob
import hashlib
import os

import torch

FORMAT = "memops-checkpoint/3"
KEYS = ("format", "task", "config", "recipe", "model", "step", "sequences", "checksum")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and what is wrong."""


def _tensors(obj, prefix=""):
    """(path, tensor) for every tensor in nested dicts / lists / tuples, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}/{i}")


def checksum(payload):
    """sha256 over every tensor of the payload but the checksum itself: its place, dtype, shape, bytes."""
    h = hashlib.sha256()
    for path, t in _tensors({k: v for k, v in payload.items() if k != "checksum"}):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{path}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path, payload):
    """Write atomically (a crash while saving leaves the previous checkpoint intact), with a checksum."""
    payload = dict(payload, format=FORMAT)
    payload["checksum"] = checksum(payload)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_stale_temporaries(directory):
    """Delete the *.pt.tmp files a save killed mid-write left behind (the .pt files are intact)."""
    for tmp in glob.glob(os.path.join(glob.escape(directory), "*.pt.tmp")):
        os.remove(tmp)


def load_checkpoint(path, device="cpu"):
    """The checkpoint dict, loaded weights-only and verified: CheckpointError (one line naming the file)
    if it is missing, empty, truncated, not a memops checkpoint, of another format version, incomplete,
    or its tensor data does not match its checksum."""
    if not os.path.isfile(path):
        raise CheckpointError(f"memops: {path}: no such checkpoint file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"memops: {path}: the file is empty")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, a pickle that is not weights-only, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"memops: {path}: not a readable checkpoint (truncated or not a torch file: "
                              f"{first[:160]})") from None
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("memops-checkpoint/"):
        raise CheckpointError(f"memops: {path}: not a memops checkpoint")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"memops: {path}: checkpoint format {ckpt['format']}, this memops reads {FORMAT}")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"memops: {path}: incomplete checkpoint, missing {', '.join(missing)}")
    if checksum(ckpt) != ckpt["checksum"]:
        raise CheckpointError(f"memops: {path}: the tensor data does not match the checksum (the file is corrupt)")
    return ckpt


# What a run needs to resume but a trained model does not (about 3x the weights with RMSProp's state).
TRAINING_STATE = ("optimizer", "data_rng", "torch_rng")


def export_model(path, out):
    """Write the checkpoint `path` without its training state to `out`: the form to ship a trained
    model in. `memops eval` and `memops plot` read it as they read the original; it cannot resume."""
    ckpt = load_checkpoint(path)
    save_checkpoint(out, {k: v for k, v in ckpt.items() if k not in TRAINING_STATE + ("format", "checksum")})


def model_from_checkpoint(path, device="cpu", backend=None):
    """(model in eval mode, its recipe, the checkpoint dict) from a checkpoint of `memops train`."""
    from .recipes import recipe_class  # recipes import the models: only when one is rebuilt

    ckpt = load_checkpoint(path, device)
    recipe = recipe_class(ckpt["task"]).restore(ckpt["task"], ckpt["recipe"])
    model = recipe.build(backend=backend).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, recipe, ckpt
