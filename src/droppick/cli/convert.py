"""The ``convert`` command; ``main.py`` adds it with ``add_parser(subparsers)``."""

from __future__ import annotations


def cmd_convert(args) -> int:
    from ..data.convert import convert

    written = convert(args.dataset, args.to, args.out, data_dir=args.data_dir, per_chunk=args.per_chunk)
    splits = ", ".join(f"{split} {count}" for split, count in written.items())
    print(f"wrote {args.out} ({args.to}; samples: {splits}); train on it with --dataset {args.to}:{args.out}")
    return 0


def add_parser(sub) -> None:
    from ..data.convert import FORMATS, SOURCES

    c = sub.add_parser("convert", help="write Fashion-MNIST or an ImageFolder tree as WebDataset shards (wds) or a "
                       "litdata dataset, for --dataset wds:DIR or litdata:DIR")
    c.add_argument("--dataset", required=True, choices=SOURCES, help="what to convert")
    c.add_argument("--data-dir", default=None, help="its folder (Fashion-MNIST: the standard locations if unset; "
                   "imagefolder: the folder with train/ and val/)")
    c.add_argument("--to", required=True, choices=FORMATS, help="wds: OUT/train-NNNNNN.tar ...; litdata: OUT/train/ ...")
    c.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    c.add_argument("--per-chunk", type=int, default=1000, dest="per_chunk",
                   help="samples per tar shard or litdata chunk (default %(default)s)")
    c.set_defaults(func=cmd_convert)
