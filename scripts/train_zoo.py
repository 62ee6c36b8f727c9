"""Train the shipped zoo and export it into lalic_core/zoo/weights/ (resumable).

    .venv/bin/python scripts/train_zoo.py --minutes 30          # plan steps from throughput
    .venv/bin/python scripts/train_zoo.py --steps 3000          # or fix the steps
    .venv/bin/python scripts/train_zoo.py ... --jobs 2          # two models at once (1 core each)
    .venv/bin/python scripts/train_zoo.py --dry-run             # print the plan only

Re-running the same command continues where it stopped: every model trains with
``lalic train --resume`` in ``runs/zoo/<name>-q<quality>/`` (git-ignored), and the plan (steps,
crop, batch, lambdas, initial weights), measured once, is kept in ``runs/zoo/plan.json`` so a restart never
changes it. Ctrl-C stops all running models after their current step with a resumable
checkpoint. A finished model is exported (best validation checkpoint, float16 when that does
not change its validation result) as ``lalic_core/zoo/weights/<name>-q<quality>.{pt,json}``.

Data: ``../shared/data/train-photos`` for training, ``../shared/data/val-photos`` for
validation (never Kodak, the test set). Defaults: LALIC preset "tiny", qualities q1..q6 of the
official lambda table, batch 8 as in the paper's recipe but 128x128 crops (a quarter of the
paper's 256x256: measured with benchmarks/train.py, one thread, tiny runs about 2.7x more
crops per second at 128 than at 256, and small about half as fast as tiny), one thread per
model, Adam lr 1e-3 (in a 48-step smoke run of tiny at q3 the validation loss fell to 12.6
with 1e-3 against 33.9 with the paper's 1e-4; the paper's rate is meant for 400K images x 40
epochs), dropped 10x at 90% of the steps.

``--minutes M`` measures the training-step time of this machine (a few steps with one thread,
after warm-up) and sets ``steps = M * 60 / step_time``; it is measured once and stored in the
plan. With ``--warm-start`` each quality after the first starts from the previous quality's
final weights (a common way to train a family of rate points; the record says so).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", help="model spec for lalic train (default tiny)")
    p.add_argument("--name", default=None, help="zoo name (default lalic-<preset>)")
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--steps", type=int, default=None, help="steps per model")
    p.add_argument("--minutes", type=float, default=None,
                   help="training minutes per model (one thread): steps from measured speed")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate (default 1e-3: a short CPU run learns much faster "
                        "than with the paper's 1e-4, see the module docstring)")
    p.add_argument("--val-every", type=int, default=None, help="default: steps / 10")
    p.add_argument("--threads", type=int, default=1, help="threads per model")
    p.add_argument("--jobs", type=int, default=1, help="models trained at once")
    p.add_argument("--warm-start", action="store_true",
                   help="start each quality from the previous one's final weights")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (every quality, or the first one "
                        "with --warm-start): e.g. a second round that continues a finished zoo")
    p.add_argument("--train-dir", default=str(SHARED / "train-photos"))
    p.add_argument("--val-dir", default=str(SHARED / "val-photos"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "zoo"))
    p.add_argument("--weights-dir", default=str(ROOT / "lalic_core" / "zoo" / "weights"))
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    args.name = args.name or f"lalic-{args.preset}"
    if args.steps is None and args.minutes is None:
        p.error("give --steps or --minutes")
    if "kodak" in (args.train_dir + args.val_dir).lower():
        p.error("Kodak is the test set: never train or validate on it")
    return args


def measure_step_seconds(preset: str, crop: int, batch: int, threads: int) -> float:
    """Median time of a training step (after warm-up), measured in a fresh process so the
    thread settings match the training processes."""
    code = (
        "import statistics, sys, time, torch\n"
        f"torch.set_num_threads({threads})\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from train import make_step\n"
        f"step, _ = make_step({preset!r}, {crop}, {batch})\n"
        "for _ in range(2): step()\n"
        "times = []\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)\n"
        "print(statistics.median(times))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(threads), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


def make_plan(args) -> dict:
    from lalic_core.train import LAMBDAS

    runs = Path(args.runs)
    plan_path = runs / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        print(f"plan: {plan_path} (kept from the first run; delete it to plan again)")
        return plan
    step_s = None
    if args.steps is not None:
        steps = args.steps
    else:
        print(f"measuring a training step ({args.preset}, crop {args.crop}, batch "
              f"{args.batch_size}, {args.threads} thread(s)) ...", flush=True)
        step_s = measure_step_seconds(args.preset, args.crop, args.batch_size, args.threads)
        steps = max(10, int(args.minutes * 60 / step_s))
    plan = {
        "name": args.name, "preset": args.preset, "qualities": args.qualities,
        "lambdas": {str(q): LAMBDAS[q] for q in args.qualities}, "steps": steps,
        "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
        "val_every": args.val_every or max(1, steps // 10), "warm_start": args.warm_start,
        "measured_step_s": step_s, "minutes": args.minutes,
        "train_dir": args.train_dir, "val_dir": args.val_dir, "init": args.init,
        "planned": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not args.dry_run:
        runs.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def command(plan: dict, quality: int, out_dir: Path, init: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "lalic_core.train", plan["train_dir"],
           "--val-dir", plan["val_dir"], "--out-dir", str(out_dir), "--model", plan["preset"],
           "--quality", str(quality), "--steps", str(plan["steps"]), "--crop",
           str(plan["crop"]), "--batch-size", str(plan["batch_size"]), "--val-every",
           str(plan["val_every"]), "--lr", str(plan["lr"]), "--threads", str(plan["threads"]),
           "--resume",
           "--no-progress", "--log-every", "10"]
    if init is not None:
        cmd += ["--init", str(init)]
    return cmd


def finished(out_dir: Path, steps: int) -> bool:
    from lalic_core.training.checkpoints import load_training_checkpoint

    last = out_dir / "last.pt"
    return last.exists() and load_training_checkpoint(last)["step"] >= steps


def export(plan: dict, quality: int, out_dir: Path, weights_dir: str) -> None:
    from lalic_core.training.export import export as export_entry

    record = export_entry(out_dir / "best.pt", plan["name"], quality, weights_dir=weights_dir,
                        val_dir=plan["val_dir"],
                        description=f"model '{plan['preset']}' trained on "
                                    f"{Path(plan['train_dir']).name} with scripts/train_zoo.py")
    rec = json.loads(Path(record).read_text())
    v = rec["validation"]["shipped"]
    print(f"exported {plan['name']}:{quality} -> {record} ({rec['storage_dtype']}, "
          f"{rec['weights_bytes'] / 1e6:.1f} MB; val bpp {v['bpp']:.4f}, PSNR {v['psnr']:.2f} dB)",
          flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    print(json.dumps(plan, indent=2))
    runs = Path(args.runs)
    todo = list(plan["qualities"])
    if args.dry_run:
        for q in todo:
            print(" ".join(command(plan, q, runs / f"{plan['name']}-q{q}", None)))
        return 0

    running: dict[int, tuple[subprocess.Popen, Path, float]] = {}
    done: list[int] = []
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        print("Ctrl-C: the running models save a checkpoint after their current step ...",
              flush=True)
        for proc, _, _ in running.values():  # SIGTERM = "save and stop" (a 2nd SIGINT aborts)
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, on_sigint)
    while todo or running:
        if interrupted and not running:
            break
        while todo and len(running) < args.jobs and not interrupted:
            q = todo[0]
            init = Path(plan["init"]) if plan.get("init") else None
            if plan["warm_start"] and q != plan["qualities"][0]:
                prev = plan["qualities"][plan["qualities"].index(q) - 1]
                if prev not in done:
                    break  # starts when the previous quality is done
                init = runs / f"{plan['name']}-q{prev}" / "last.pt"
            todo.pop(0)
            out_dir = runs / f"{plan['name']}-q{q}"
            if finished(out_dir, plan["steps"]):
                print(f"q{q}: already trained ({out_dir})", flush=True)
                done.append(q)
                if not args.no_export:
                    export(plan, q, out_dir, args.weights_dir)
                continue
            log_path = runs / f"{plan['name']}-q{q}.log"
            print(f"q{q}: training -> {out_dir} (log {log_path})", flush=True)
            with open(log_path, "a") as log:
                proc = subprocess.Popen(command(plan, q, out_dir, init), cwd=ROOT,
                                        env=_env(plan["threads"]), stdout=log,
                                        stderr=subprocess.STDOUT)
            running[q] = (proc, out_dir, time.time())
        if not running and todo:  # blocked: a warm start waits on a quality that failed
            print(f"cannot start q{todo[0]}: the previous quality did not finish", flush=True)
            return 1
        for q, (proc, out_dir, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[q]
            if proc.returncode == 0:
                print(f"q{q}: finished in {(time.time() - start) / 60:.1f} min", flush=True)
                done.append(q)
                if not args.no_export:
                    export(plan, q, out_dir, args.weights_dir)
            elif proc.returncode == 130:
                print(f"q{q}: interrupted; re-run the same command to continue", flush=True)
            else:
                log_path = runs / f"{plan['name']}-q{q}.log"
                print(f"q{q}: failed with status {proc.returncode}; see {log_path}", flush=True)
                interrupted = True
        time.sleep(1)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
