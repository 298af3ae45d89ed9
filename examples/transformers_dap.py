"""Drop-and-Pick with Hugging Face transformers' Trainer: a small ConvNeXt on Fashion-MNIST-sized images.

    python examples/transformers_dap.py --out runs/vit-dap                      # one process
    torchrun --nproc_per_node 2 examples/transformers_dap.py --out runs/vit-dap # DDP (gloo on CPU, nccl on GPUs)

The data is a seeded synthetic stand-in (--samples images of 1x28x28 in 10 classes, each class a
brighter blob in its own place) so that the program runs anywhere; put your own dataset of
{"pixel_values", "labels"} dicts in its place. Every rank prints the subset sizes it trained and
a digest of its final subset, and writes them to OUT/dap-rank{R}.json: under DDP the ranks agree
(DropAndPickTrainer also checks it after every epoch and stops if they do not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from transformers import ConvNextConfig, ConvNextForImageClassification, TrainingArguments

from droppick import DaPSchedule, DropAndPick, distributed
from droppick.integrations.transformers import DropAndPickTrainer


class BlobImages(torch.utils.data.Dataset):
    """``n`` seeded 1x28x28 images: noise plus a bright 7x7 blob whose place says the class."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 10, (n,), generator=g)
        self.images = torch.randn(n, 1, 28, 28, generator=g)
        for i, label in enumerate(self.labels.tolist()):
            row, col = divmod(label, 4)
            self.images[i, 0, 7 * row:7 * row + 7, 7 * col:7 * col + 7] += 2.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index], "labels": int(self.labels[index])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the Trainer's output_dir (checkpoints)")
    p.add_argument("--samples", type=int, default=2000, help="training images (default %(default)s)")
    p.add_argument("--epochs", type=int, default=8, help="E (default %(default)s)")
    args = p.parse_args()

    train_set, eval_set = BlobImages(args.samples, seed=0), BlobImages(500, seed=1)
    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(num_channels=1, patch_size=2, hidden_sizes=[16, 32, 64, 64],
                                                          depths=[1, 1, 1, 1], num_labels=10, image_size=28))
    schedule = DaPSchedule(epochs=args.epochs, warmup=2, interval=1, keep=0.8, active=None,
                           reuse_at=[round(args.epochs * 0.6)])
    dap = DropAndPick(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    training = TrainingArguments(output_dir=args.out, num_train_epochs=schedule.epochs, per_device_train_batch_size=64,
                                 learning_rate=3e-3, lr_scheduler_type="cosine", eval_strategy="epoch",
                                 save_strategy="epoch", save_total_limit=2, logging_strategy="epoch", report_to=[],
                                 disable_tqdm=True, seed=0, use_cpu=not torch.cuda.is_available())
    trainer = DropAndPickTrainer(model=model, args=training, train_dataset=train_set, eval_dataset=eval_set, dap=dap,
                                 compute_metrics=lambda p: {"top1": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    trainer.train()
    metrics = trainer.evaluate()
    digest = hashlib.sha256(dap.subset.numpy().tobytes()).hexdigest()[:16]
    result = {"rank": training.process_index, "world_size": training.world_size, "digest": digest,
              "samples_per_epoch": dap.samples_per_epoch, "compute_fraction": dap.compute_fraction}
    Path(args.out, f"dap-rank{training.process_index}.json").write_text(json.dumps(result))  # for tests/test_transformers.py
    print(f"rank {training.process_index}/{training.world_size}: trained {dap.samples_per_epoch} samples per epoch "
          f"(compute {100 * dap.compute_fraction:.1f}%), final subset {digest}, eval top-1 {100 * metrics['eval_top1']:.1f}%")
    if torch.distributed.is_initialized():  # destroy the group and leave without the interpreter's
        distributed.exit_done()  # teardown, which can abort a finished worker (see its docstring)


if __name__ == "__main__":
    main()
