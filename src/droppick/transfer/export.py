"""``droppick export``: a trained classifier's backbone, in a file other frameworks load.

Formats (``FORMATS``):

* ``torchvision``: the state dict without the classifier (``fc.*`` for ResNet and MobileNet-V1,
  ``classifier.*`` for DenseNet), saved with ``torch.save``. It loads into torchvision's model
  of the same name with ``strict=False`` (missing keys: exactly the classifier), strictly into
  ``resnet_fpn_backbone(...).body`` for ResNets, and into droppick's own ``mobilenet_v1``.
* ``safetensors``: the same tensors, as safetensors (metadata: arch, epoch, source file).
* ``detectron2``: ResNets only, renamed as detectron2's ``tools/convert-torchvision-to-d2.py``
  does (``conv1`` -> ``stem.conv1``, ``bn1`` -> ``stem.conv1.norm``, ``layerN`` -> ``res(N+1)``,
  ``bnK`` -> ``convK.norm``, ``downsample.0/1`` -> ``shortcut``/``shortcut.norm``), as numpy
  arrays in a pickled ``{"model", "__author__", "matching_heuristics"}`` dict.

The ImageNet architectures of Table 7 are exported: they are the ones the paper transfers, and
their backbones have a standard meaning outside droppick. So are ``timm:NAME`` models (formats
``torchvision`` and ``safetensors``): their backbone is what ``timm.create_model(NAME,
num_classes=0)`` holds, and the file loads into it strictly. The CIFAR models and small_cnn
(32x32 or 28x28 inputs, no standard detection backbone) are refused.

Every file gets a ``FILE.sha256`` beside it in ``sha256sum`` format, so ``sha256sum -c`` checks it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..train.checkpoint import check_format, load_checkpoint, verify_digest, write_with_digest
from ..models import TIMM_PREFIX, build_model
from ..train.rundir import RunDir

FORMATS = ("torchvision", "safetensors", "detectron2")

# arch -> prefix of its classifier, which a backbone leaves out.
CLASSIFIERS = {
    "resnet18": "fc.", "resnet50": "fc.", "resnet101": "fc.", "resnet152": "fc.",
    "densenet121": "classifier.", "densenet169": "classifier.",
    "mobilenet_v1": "fc.",
}  # fmt: skip
RESNETS = tuple(arch for arch in CLASSIFIERS if arch.startswith("resnet"))


def require(module: str):
    """Import one of the optional transfer dependencies, saying how to install it if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is not installed; pip install 'droppick[transfer]' (or {module.split('.')[0]})") from e


def supported_archs(fmt: str) -> tuple[str, ...]:
    return RESNETS if fmt == "detectron2" else (*CLASSIFIERS, f"{TIMM_PREFIX}NAME")


def _supported(arch: object, fmt: str) -> bool:
    is_timm = isinstance(arch, str) and arch.startswith(TIMM_PREFIX)
    return arch in RESNETS if fmt == "detectron2" else (arch in CLASSIFIERS or is_timm)


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    arch: str
    epoch: int
    num_tensors: int


def reference_backbone(arch: str) -> dict[str, torch.Size]:
    """Key -> shape of ``arch``'s backbone at 3 input channels, built on the meta device:
    no memory, no initialisation, no draw from the global RNG. For ``timm:NAME``, timm's own
    headless model (``num_classes=0``)."""
    with torch.device("meta"):
        if arch.startswith(TIMM_PREFIX):
            import timm

            model = timm.create_model(arch[len(TIMM_PREFIX):], pretrained=False, num_classes=0, in_chans=3)
            return {k: v.shape for k, v in model.state_dict().items()}
        model = build_model(arch, num_classes=1, in_channels=3)
    return {k: v.shape for k, v in model.state_dict().items() if not k.startswith(CLASSIFIERS[arch])}


def backbone_state_dict(checkpoint: dict, fmt: str = "torchvision") -> tuple[str, dict[str, torch.Tensor]]:
    """(arch, backbone tensors) of a droppick checkpoint dict; refuses what ``fmt`` cannot hold."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError("not a droppick training checkpoint (no 'model' and 'config' entries)")
    check_format(checkpoint)
    arch = checkpoint["config"].get("model")
    if not _supported(arch, fmt):
        hint = "; use --format torchvision or safetensors" if fmt == "detectron2" and _supported(arch, "torchvision") else ""
        raise ValueError(f"--format {fmt} has no backbone mapping for model {arch!r}{hint}. "
                         f"Supported: {', '.join(supported_archs(fmt))}")
    reference = reference_backbone(arch)
    # A timm model's classifier is whatever its headless twin lacks; ours are named in CLASSIFIERS.
    in_backbone = (lambda k: k in reference) if arch.startswith(TIMM_PREFIX) else \
        (lambda k: not k.startswith(CLASSIFIERS[arch]))
    # contiguous(): channels_last runs store NHWC strides, which safetensors cannot write.
    state = {k: v.detach().contiguous() for k, v in checkpoint["model"].items() if in_backbone(k)}
    if set(state) != set(reference):
        missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
        raise ValueError(f"checkpoint's {arch} does not match droppick's {arch}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for key, shape in reference.items():
        if state[key].shape != shape:
            raise ValueError(f"{key} has shape {tuple(state[key].shape)}, but {arch} for RGB input has "
                             f"{tuple(shape)}; backbones are exported for 3-channel images only, so "
                             "train on an RGB dataset (e.g. --dataset imagefolder)")
    return arch, state


def torchvision_to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """detectron2's ResNet names, as in its ``tools/convert-torchvision-to-d2.py``.

    ``num_batches_tracked`` is dropped: detectron2's FrozenBatchNorm2d has no such buffer, and
    torchvision's own published weights (the script's usual input) do not carry it either.
    """
    renamed = {}
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = key if key.startswith("layer") else "stem." + key
        for n in (1, 2, 3, 4):
            new = new.replace(f"layer{n}", f"res{n + 1}")
        for n in (1, 2, 3):
            new = new.replace(f"bn{n}", f"conv{n}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        renamed[new] = tensor.cpu().numpy()
    return renamed


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_checkpoint(source: Path) -> tuple[dict, Path]:
    if source.is_dir():
        found = RunDir(source).latest_checkpoint_and_path()  # falls back past a corrupt newest one
        if found is None:
            raise FileNotFoundError(f"{source} is a directory without checkpoint-EEEE.pt files; "
                                    "pass a checkpoint file or a run directory")
        path, state = found
        return state, path
    return load_checkpoint(source), source


def export_backbone(source: str | Path, fmt: str, out: str | Path) -> Exported:
    """Write the backbone of checkpoint ``source`` (a file, or a run directory: its newest
    checkpoint) to ``out`` in format ``fmt``, then ``out.sha256``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "detectron2" and out.suffix != ".pkl":
        # DetectionCheckpointer unpickles only files named *.pkl; anything else goes to torch.load.
        raise ValueError(f"detectron2 reads a pickled checkpoint only from a file ending in .pkl; "
                         f"name the output e.g. {out.with_suffix('.pkl')}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist; create it first")
    checkpoint, source = _read_checkpoint(Path(source))
    arch, state = backbone_state_dict(checkpoint, fmt)
    epoch = int(checkpoint.get("epoch", 0))
    if fmt == "torchvision":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
    elif fmt == "safetensors":
        meta = {"arch": arch, "epoch": str(epoch), "source": source.name, "droppick": "backbone"}
        data = require("safetensors.torch").save(state, metadata=meta)
    else:
        payload = {"model": torchvision_to_detectron2(state), "__author__": "droppick", "matching_heuristics": True}
        data = pickle.dumps(payload)
    return Exported(out, write_with_digest(out, data), arch, epoch, len(state))


def load_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``torchvision`` (.pth/.pt) or ``safetensors`` export; checks ``PATH.sha256`` if present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no backbone file at {path}; make one with 'droppick export'")
    if path.suffix == ".pkl":
        raise ValueError(f"{path} is a detectron2 export; fine-tuning here needs --format torchvision or safetensors")
    data = path.read_bytes()
    verify_digest(path, data, "the file changed or is truncated; export it again")
    if path.suffix == ".safetensors":
        return require("safetensors.torch").load(data)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise ValueError(f"{path} is not a torch.save file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; was it made by 'droppick export'?")
    return state
