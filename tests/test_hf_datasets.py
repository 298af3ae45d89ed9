"""--dataset hf:PATH: Hugging Face datasets saved with save_to_disk, or parquet in the Hub's layout."""

import hashlib
import json

import pytest
import torch

datasets = pytest.importorskip("datasets")

from droppick.cli.main import main  # noqa: E402
from droppick.data.hf import HFImages, image_and_label_columns  # noqa: E402

CLASSES = ["shirt", "shoe", "bag"]
TRAIN = ["--model", "small_cnn", "--epochs", "3", "--warmup", "1", "--interval", "1", "--keep", "0.5",
         "--reuse-at", "none", "--batch-size", "16", "--device", "cpu", "--no-progress",
         "--set", "image_size=12", "--set", "eval_resize=14"]


def make_splits(n_train: int = 48, n_test: int = 18, seed: int = 0):
    """A DatasetDict of 16x16 PNGs whose class is a colour, with an Image and a ClassLabel column
    (and a caption, to be ignored)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.randint(0, 3, (n,), generator=g).tolist()
        images = []
        for label in labels:
            pixels = (torch.rand(16, 16, 3, generator=g) * 60).to(torch.uint8)
            pixels[..., label] += 150
            images.append(Image.fromarray(pixels.numpy()))
        return datasets.Dataset.from_dict(
            {"caption": [f"a {CLASSES[c]}" for c in labels], "img": images, "category": labels},
            features=datasets.Features({"caption": datasets.Value("string"), "img": datasets.Image(),
                                        "category": datasets.ClassLabel(names=CLASSES)}))

    return datasets.DatasetDict({"train": split(n_train), "test": split(n_test)})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "saved"
    make_splits().save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "hub"
    for name, split in make_splits().items():
        (path / "data").mkdir(parents=True, exist_ok=True)
        split.to_parquet(str(path / "data" / f"{name}-00000-of-00001.parquet"))
    return path


def test_columns_are_found_by_type_or_named():
    features = make_splits(3, 3)["train"].features
    assert image_and_label_columns(features, None, None) == ("img", "category")
    assert image_and_label_columns(features, "img", "category") == ("img", "category")
    with pytest.raises(ValueError, match=r"label_column='kind' is not a column; the columns are "
                                         r"\['caption', 'img', 'category'\]"):
        image_and_label_columns(features, None, "kind")
    two = datasets.Features({"a": datasets.Image(), "b": datasets.Image(), "label": datasets.Value("int64")})
    assert image_and_label_columns(two, "b", None) == ("b", "label")  # an integer column named label
    with pytest.raises(ValueError, match=r"cannot tell the image column by its type \(found \['a', 'b'\] .*--set "
                                         r"image_column=NAME"):
        image_and_label_columns(two, None, None)


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_trains_from_a_saved_dataset_dict_and_from_parquet_reading_only_the_subset(layout, tmp_path, monkeypatch,
                                                                                   request):
    path = request.getfixturevalue(layout)
    read = []  # (split, index) of every row decoded
    real_getitem = HFImages.__getitem__

    def getitem(self, index):
        read.append((self.name.rsplit(" ", 1)[1], index))
        return real_getitem(self, index)

    monkeypatch.setattr(HFImages, "__getitem__", getitem)
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"hf:{path}", *TRAIN, "--out", str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["num_train_samples"] == 48 and summary["num_test_samples"] == 18
    assert [r["subset_size"] for r in rows] == [48, 48, 24]
    train_reads = [i for split, i in read if split == "train"]
    assert len(train_reads) == 48 + 48 + 24  # each epoch decodes its subset once, and nothing else
    start = 0
    for row in rows:  # the rows decoded in each epoch are exactly that epoch's subset
        chunk = torch.tensor(sorted(train_reads[start:start + row["subset_size"]]), dtype=torch.int64)
        assert hashlib.sha256(chunk.numpy().tobytes()).hexdigest() == row["subset_sha256"]
        start += row["subset_size"]
    assert summary["final_test_top1"] > 100 / 3  # colours are easy: better than chance


def test_slicing_column_overrides_and_device_decoding_apply(tmp_path, capsys, monkeypatch):
    """Labels in a plain integer column named ``cls``: not found by type, so it must be named."""
    from droppick.data.device_decode import DeviceDecoder

    path = tmp_path / "plain"
    plain = {name: split.cast_column("category", datasets.Value("int64")).rename_column("category", "cls")
             for name, split in make_splits().items()}
    datasets.DatasetDict(plain).save_to_disk(str(path))
    args = ["train", "--dataset", f"hf:{path}", *TRAIN, "--train-samples", "30", "--decode", "device"]
    assert main(args + ["--out", str(tmp_path / "unnamed")]) == 2
    assert "cannot tell the label column by its type (found none among ['caption', 'img', 'cls'])" in capsys.readouterr().err

    decoded = []  # batches the device decoder turned into images
    real_call = DeviceDecoder.__call__
    monkeypatch.setattr(DeviceDecoder, "__call__", lambda self, *a, **kw: decoded.append(1) or real_call(self, *a, **kw))
    out = tmp_path / "run"
    assert main(args + ["--set", "label_column=cls", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train_samples"] == 30 and summary["final_test_top1"] > 100 / 3
    assert len(decoded) >= 3  # every epoch's batches went through the device decoder
    assert main(args + ["--set", "label_column=caption", "--out", str(tmp_path / "bad")]) == 2
    assert "label_column='caption' holds Value('string'" in capsys.readouterr().err


def test_bad_paths_and_splits_are_refused_with_what_to_give(tmp_path, capsys):
    assert main(["train", "--dataset", f"hf:{tmp_path / 'missing'}", *TRAIN, "--out", str(tmp_path / "a")]) == 2
    assert "is not a folder; give a DatasetDict saved with save_to_disk" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--dataset", f"hf:{tmp_path / 'empty'}", *TRAIN, "--out", str(tmp_path / "b")]) == 2
    assert "holds neither a saved DatasetDict (dataset_dict.json) nor parquet files" in capsys.readouterr().err
    only_train = tmp_path / "only-train"
    datasets.DatasetDict({"train": make_splits(3, 3)["train"]}).save_to_disk(str(only_train))
    assert main(["train", "--dataset", f"hf:{only_train}", *TRAIN, "--out", str(tmp_path / "c")]) == 2
    assert "has the splits ['train']; droppick needs 'train' and one of test, validation, val" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled-test"
    splits = make_splits(6, 3)
    datasets.DatasetDict({"train": splits["train"], "test": splits["test"].cast_column("category", datasets.Value("int64"))
                          .map(lambda row: {"category": -1}), "validation": splits["test"]}).save_to_disk(str(unlabelled))
    assert main(["train", "--dataset", f"hf:{unlabelled}", *TRAIN, "--epochs", "1", "--warmup", "0",
                 "--out", str(tmp_path / "e")]) == 0  # evaluated on validation: test has no labels
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["num_test_samples"] == 3
    no_labels = tmp_path / "no-labels"
    datasets.DatasetDict({"train": splits["train"], "test": splits["test"].remove_columns("category")}).save_to_disk(
        str(no_labels))
    assert main(["train", "--dataset", f"hf:{no_labels}", *TRAIN, "--out", str(tmp_path / "f")]) == 2
    assert ("no split to evaluate on with the columns 'img' and 'category' and real labels; looked at test (columns "
            "['caption', 'img'])") in capsys.readouterr().err
    assert main(["train", "--set", "image_column=img", "--out", str(tmp_path / "d")]) == 2
    assert "image_column and label_column name the columns of --dataset hf:PATH" in capsys.readouterr().err
