"""DaP inside other training stacks (each module imports its stack only when used):

- ``lightning``: ``DropAndPickCallback`` for PyTorch Lightning (``pip install droppick[lightning]``).
- ``transformers``: ``DropAndPickTrainer``, a ``transformers.Trainer`` (``droppick[transformers]``).
- ``tensorboard``: a per-epoch scalar writer for droppick's own trainer (``droppick[tensorboard]``).

Hugging Face Accelerate needs no adapter: see ``examples/accelerate_dap.py``. timm models are
built by ``droppick.models.build_model("timm:NAME")``.
"""
