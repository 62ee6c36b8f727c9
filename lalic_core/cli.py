"""The ``lalic`` console script: compress, decompress, evaluate and inspect ``.lalic`` files.

    lalic compress IN.png OUT.lalic --model lalic-tiny:3    # zoo entry NAME:QUALITY
    lalic compress IN.png OUT.lalic --model ckpt.pth.tar    # official / own checkpoint
    lalic compress IN.png OUT.lalic --model tiny            # preset, random weights (warning)
    lalic decompress IN.lalic OUT.png                       # model from the file's identity
    lalic eval DIR --model lalic-tiny:3 --output rd.json    # bpp, PSNR, MS-SSIM, times
    lalic info IN.lalic                                     # header and bits per step
    lalic check-checkpoint lalic-mse-q6.pth                 # official checkpoint vs paper
    lalic models                                            # presets and zoo entries

Every sub-command sets ``func`` on its parser; :func:`main` calls ``args.func(args)``. Errors
(missing files, non-images, damaged or foreign ``.lalic`` files, bad arguments) print
``lalic: error: ...`` on stderr and exit with status 1 (2 for command-line usage errors);
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

from lalic_core.codec.evaluation import evaluate

__all__ = ["build_parser", "evaluate", "main"]

PROG = "lalic"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _say(text: str = "") -> None:
    print(text, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"{PROG}: warning: {message}"
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)


def _set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _fmt_bytes(n: int) -> str:
    return f"{n:,} bytes"


# --------------------------------------------------------------------------------------------
# compress / decompress
# --------------------------------------------------------------------------------------------
def _cmd_compress(args) -> int:
    from lalic_core import codec

    _set_threads(args)
    if _same_file(args.input, args.output):
        raise ValueError(f"output {args.output} would overwrite the input image")
    x = codec.read_image(args.input)  # first, so a bad image fails before a model is built
    model = codec.resolve_model(args.model, device=args.device,
                                biwkv_semantics=args.biwkv_semantics)
    start = time.perf_counter()
    data = codec.encode_image(x, model, pad_multiple=args.pad_multiple)
    seconds = time.perf_counter() - start
    Path(args.output).write_bytes(data)
    header = codec.LalicFile.from_bytes(data)
    pixels = header.num_pixels
    _say(
        f"{args.input} ({header.width}x{header.height}) -> {args.output}: "
        f"{_fmt_bytes(len(data))}, {8 * len(data) / pixels:.4f} bpp "
        f"(strings {_fmt_bytes(header.payload_bytes)} = {8 * header.payload_bytes / pixels:.4f} bpp, "
        f"container {header.header_bytes} bytes); model {model.identity.spec}; "
        f"BiWKV {header.biwkv_semantics}; {seconds:.2f} s"
    )
    return 0


def _cmd_decompress(args) -> int:
    from lalic_core import codec

    _set_threads(args)
    if _same_file(args.input, args.output):
        raise ValueError(f"output {args.output} would overwrite the input file")
    codec.check_image_path(args.output)
    header = codec.read_header(args.input)
    codec.check_biwkv_semantics(header, args.biwkv_semantics)  # before building a model
    model = codec.model_for_file(header, args.model, args.device)  # not timed, as in compress
    start = time.perf_counter()
    x_hat = codec.decode_image(header, model, device=args.device,
                               biwkv_semantics=args.biwkv_semantics)
    seconds = time.perf_counter() - start
    codec.save_image(args.output, x_hat)
    _say(f"{args.input} -> {args.output} ({header.width}x{header.height}); "
         f"model {header.identity.spec}; BiWKV {header.biwkv_semantics}; {seconds:.2f} s")
    return 0


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
def _info_dict(path: str, header) -> dict:
    from lalic_core import codec

    pixels = header.num_pixels
    strings = header.string_list()
    hp, wp = header.padded_size
    return {
        "file": str(path),
        "bytes": header.file_bytes,
        "bpp": 8 * header.file_bytes / pixels,
        "format_version": header.version,
        "model": {
            "kind": header.identity.kind,
            "spec": header.identity.spec,
            "description": header.identity.describe(),
        },
        "weights_fingerprint": header.fingerprint.hex(),
        "biwkv_semantics": header.biwkv_semantics,
        "width": header.width,
        "height": header.height,
        "pad_multiple": header.pad_multiple,
        "padded_width": wp,
        "padded_height": hp,
        "padding": header.padding,
        "latent_shape": _jsonable(header.shape),
        "container_bytes": header.header_bytes,
        "strings_bytes": header.payload_bytes,
        "checksum": "ok",
        "steps": [
            {"step": label, "bytes": len(s), "bits": 8 * len(s), "bpp": 8 * len(s) / pixels}
            for label, s in zip(codec.step_labels(header), strings)
        ],
    }


def _jsonable(tree):
    if isinstance(tree, dict):
        return {k: _jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_jsonable(v) for v in tree]
    return tree


def _cmd_info(args) -> int:
    from lalic_core import codec

    header = codec.read_header(args.file)
    info = _info_dict(args.file, header)
    if args.json:
        _say(json.dumps(info, indent=2))
        return 0
    pad = info["padding"]
    rows = [
        ("file", f"{args.file} ({_fmt_bytes(info['bytes'])}, {info['bpp']:.4f} bpp)"),
        ("format version", str(info["format_version"])),
        ("model", info["model"]["description"]),
        ("weights fingerprint", info["weights_fingerprint"]),
        ("BiWKV semantics", header.biwkv_semantics
         + ("  (version-1 file: no field, formula)" if header.version < 2 else "")),
        ("image", f"{header.width}x{header.height}"),
        ("padded to", (f"{info['padded_width']}x{info['padded_height']} (multiple of "
                       f"{header.pad_multiple}; top {pad['top']}, bottom {pad['bottom']}, "
                       f"left {pad['left']}, right {pad['right']})")),
        ("latent shape", json.dumps(info["latent_shape"])
         + ("  (h, w of the hyper-latent z, as CompressAI's compress returns it)"
            if isinstance(info["latent_shape"], list) and len(info["latent_shape"]) == 2
            else "")),
        ("container", f"{_fmt_bytes(header.header_bytes)} (header, lengths, checksum)"),
        ("strings", (f"{_fmt_bytes(header.payload_bytes)} "
                     f"({8 * header.payload_bytes / header.num_pixels:.4f} bpp)")),
        ("checksum", "CRC-32 ok"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        _say(f"{key:<{width}}  {value}")
    _say()
    label_width = max([len("step")] + [len(s["step"]) for s in info["steps"]])
    _say(f"{'step':<{label_width}}  {'bytes':>9}  {'bits':>10}  {'bpp':>8}  {'share':>6}")
    total = max(header.payload_bytes, 1)
    for step in info["steps"]:
        _say(f"{step['step']:<{label_width}}  {step['bytes']:>9,}  {step['bits']:>10,}  "
             f"{step['bpp']:>8.4f}  {100 * step['bytes'] / total:>5.1f}%")
    _say(f"{'total':<{label_width}}  {header.payload_bytes:>9,}  {8 * header.payload_bytes:>10,}  "
         f"{8 * header.payload_bytes / header.num_pixels:>8.4f}  100.0%")
    return 0


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------
def _cmd_eval(args) -> int:
    import torch

    from lalic_core import codec
    from lalic_core.data import list_images

    _set_threads(args)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    paths = list_images(args.folder, recursive=not args.no_recursive)[: args.limit]
    model = codec.resolve_model(args.model, device=args.device,
                                biwkv_semantics=args.biwkv_semantics)
    multiple = args.pad_multiple or model.downsampling_factor
    description = (
        f"lalic eval of {model.identity.describe()} on {len(paths)} images from {args.folder}; "
        f"BiWKV semantics {codec.model_biwkv_semantics(model)}; "
        f"centred zero padding to multiples of {multiple}; device {args.device}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}. "
        "bpp: whole .lalic file; bpp-strings: entropy-coded strings only (the paper's count); "
        "PSNR / MS-SSIM on the decoded 8-bit RGB image; times in seconds per image."
    )
    report = evaluate(paths, model, pad_multiple=args.pad_multiple, progress=not args.quiet,
                      name=args.name, description=description)

    if not args.quiet:
        width = max(len(im["image"]) for im in report["images"])
        _say(f"{'image':<{width}}  {'bpp':>7}  {'psnr':>7}  {'ms-ssim':>7}  {'enc s':>6}  {'dec s':>6}")
        for im in report["images"]:
            ms = "-" if im["ms-ssim"] is None else f"{im['ms-ssim']:.4f}"
            _say(f"{im['image']:<{width}}  {im['bpp']:>7.4f}  {im['psnr']:>7.3f}  {ms:>7}  "
                 f"{im['encoding_time']:>6.2f}  {im['decoding_time']:>6.2f}")
    res = report["results"]
    parts = [f"{res['bpp'][0]:.4f} bpp (strings {res['bpp-strings'][0]:.4f})"]
    for key, label, fmt in (("psnr", "PSNR", "{:.3f} dB"), ("ms-ssim", "MS-SSIM", "{:.4f}"),
                            ("encoding_time", "encode", "{:.3f} s"),
                            ("decoding_time", "decode", "{:.3f} s")):
        if key in res:
            parts.append(f"{label} {fmt.format(res[key][0])}")
    _say(f"mean over {len(report['images'])} images: " + ", ".join(parts))
    if args.output:
        out = Path(args.output)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        _say(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------------------------
# check-checkpoint
# --------------------------------------------------------------------------------------------
#: Exit status of check-checkpoint when the result is far from the published point.
EXIT_FAR = 3


def _cmd_check_checkpoint(args) -> int:
    from lalic_core.check_checkpoint import check_checkpoint

    _set_threads(args)
    report = check_checkpoint(args.checkpoint, quality=args.quality, full=args.full,
                              biwkv_semantics=args.biwkv_semantics, kodak=args.kodak,
                              device=args.device, progress=not args.quiet)
    if args.json:
        _say(json.dumps(report.as_dict(), indent=2))
    else:
        _say(report.format())
    return EXIT_FAR if report.far else 0


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def _cmd_models(args) -> int:
    from lalic_core import zoo
    from lalic_core.models.factory import preset_names

    _say("presets (random-initialised weights): " + ", ".join(preset_names()))
    entries = zoo.available()
    _say("zoo entries (NAME:QUALITY): " + (", ".join(f"{n}:{q}" for n, q in entries)
                                           or "none installed"))
    _say("checkpoints: pass the file path to --model")
    return 0


# --------------------------------------------------------------------------------------------
# Parser and main
# --------------------------------------------------------------------------------------------
class CommandError(Exception):
    """An error of the command line itself; printed without its type."""


def _unavailable(command: str, reason: str):
    def run(args) -> int:
        raise CommandError(f"'{PROG} {command}' is unavailable here ({reason})")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="LALIC learned image compression (Feng et al., CVPR 2025): real .lalic "
                    "bitstreams, evaluation and training.",
        epilog="Exit status: 0 on success, 1 on errors, 2 on command-line usage errors.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and all library warnings")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and all library warnings")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default="cpu",
                        help="torch device (default cpu; decode on the kind of device you "
                             "encoded on: floating point differs between devices)")
    device.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    semantics = ("formula", "official32", "official64")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compress", parents=[common, device], help="compress an image to a .lalic file")
    p.add_argument("input", help="image file (PNG, JPEG, ...)")
    p.add_argument("output", help="the .lalic file to write")
    p.add_argument("--model", "-m", required=True,
                   help="zoo entry NAME:QUALITY, checkpoint file, or preset name (random weights)")
    p.add_argument("--pad-multiple", type=int, default=None,
                   help="pad to multiples of this (default: the model's factor, 64; the "
                        "official evaluation uses 128)")
    p.add_argument("--biwkv-semantics", choices=semantics, default=None,
                   help="what BiWKV computes (default: the model's; checkpoints: what they "
                        "record, else formula; official checkpoints: official64); recorded "
                        "in the file")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("decompress", parents=[common, device], help="decode a .lalic file to an image")
    p.add_argument("input", help="the .lalic file")
    p.add_argument("output", help="image file to write (PNG keeps the decoded pixels exactly)")
    p.add_argument("--model", "-m", default=None,
                   help="model to decode with (default: the one the file names; required for "
                        "files made with a checkpoint)")
    p.add_argument("--biwkv-semantics", choices=semantics, default=None,
                   help="default: the semantics the file records (the only one it decodes "
                        "under); a different one is an error")
    p.set_defaults(func=_cmd_decompress)

    p = sub.add_parser("eval", parents=[common, device],
                       help="bpp, PSNR, MS-SSIM and codec times over a folder of images")
    p.add_argument("folder", help="folder of images (e.g. Kodak)")
    p.add_argument("--model", "-m", required=True, help="as for compress")
    p.add_argument("--output", "-o", default=None, help="write the results as RD JSON here")
    p.add_argument("--name", default=None, help="curve name in the JSON (default: the model)")
    p.add_argument("--pad-multiple", type=int, default=None, help="as for compress")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--no-recursive", action="store_true", help="do not look in sub-folders")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")
    p.add_argument("--biwkv-semantics", choices=semantics, default=None, help="as for compress")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "check-checkpoint", parents=[common, device],
        help="evaluate a checkpoint on Kodak and compare it with the published LALIC point",
        epilog=f"Exit status {EXIT_FAR} when the result is far from the published point.")
    p.add_argument("checkpoint", help="checkpoint file (official lalic-mse-qN.pth or ours)")
    p.add_argument("--quality", "-q", type=int, default=None,
                   help="published quality 1..6 to compare with (default: from the file name, "
                        "e.g. lalic-mse-q6.pth, or the lambda a training checkpoint records)")
    p.add_argument("--full", action="store_true",
                   help="all 24 Kodak images (default: an evenly spaced subset of 4)")
    p.add_argument("--biwkv-semantics", choices=semantics, default=None,
                   help="default: what the checkpoint records, else official64 (what the "
                        "official checkpoints were trained with)")
    p.add_argument("--kodak", default=None, help="Kodak folder (default: the one "
                   "'lalic download-kodak' made, or $LALIC_KODAK)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check_checkpoint)

    p = sub.add_parser("info", parents=[common], help="header and bits per step of a .lalic file")
    p.add_argument("file", help="the .lalic file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("models", parents=[common], help="list presets and zoo entries")
    p.set_defaults(func=_cmd_models)

    try:
        from lalic_core.data import add_download_arguments, run_download

        p = sub.add_parser("download-kodak", parents=[common], help="download the Kodak test set")
        add_download_arguments(p)
        p.set_defaults(func=run_download)
    except Exception as exc:  # noqa: BLE001 -- optional command: keep the others working
        p = sub.add_parser("download-kodak", parents=[common], help="(unavailable)")
        p.set_defaults(func=_unavailable("download-kodak", f"{type(exc).__name__}: {exc}"))

    try:
        from lalic_core.training.args import add_train_subcommand

        add_train_subcommand(sub)  # it defines its own --debug
    except Exception as exc:  # noqa: BLE001 -- optional command: keep the others working
        if "train" not in sub.choices:
            p = sub.add_parser("train", parents=[common], help="(unavailable)")
            p.set_defaults(func=_unavailable("train", f"{type(exc).__name__}: {exc}"))
    return parser


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, OSError, CommandError)):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lalic`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if "--debug" not in argv:  # library deprecation noise (torch.jit, ...) is not for users
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
        from lalic_core.errors import LalicWarning

        warnings.simplefilter("always", LalicWarning)
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
        debug = getattr(args, "debug", False)
        try:
            status = args.func(args)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 -- a message, never a traceback
            if debug:
                traceback.print_exc()
            print(f"{PROG}: error: {_error_text(exc)}", file=sys.stderr)
            return 1
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
