"""zk0 performance benchmarks: one command, a rich table, a JSON file.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--out benchmarks/results/latest.json]

Figures (see docs/performance.md for what each one means and the targets):

(a) bytes on the wire per client per round, full-size SmolVLA (``wire.py``);
(b) peak RSS of ``zk0 simulate``'s server process for 2/4/8/16 full-size replies
    (``server_memory.py``), and of ``Zk0FedProx.aggregate_train`` alone (``aggregate.py``);
(c) round overhead of ``zk0 simulate`` with the tiny model (``overhead.py``);
(d) client trainer throughput vs a plain LeRobot loop, data-wait share (``throughput.py``);
(e) ``zk0 tiny-run`` cold wall time (``overhead.py``), when the simulator is available;
(f) with ``--device cuda``: full-size SmolVLA training steps/s at batch 16 and 64 with
    bf16 autocast and peak GPU memory (``gpu.py``);
(g) round overhead of a deployment, ``zk0 train --local-nodes 2`` with the tiny model,
    warm ClientApp vs Flower's default fresh process per message (``overhead.py``).

With ``--only``, the sections not run are kept from the existing ``--out`` file (each
section records when it was measured), so one figure can be re-measured alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
# The Flower executables (flower-superlink, flower-superexec) next to this interpreter.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
GB = 1e9


def _run(name: str, fn: Any, results: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as err:  # one failed section must not lose the others
        results[name] = {"error": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc()[-2000:]}
    results[name]["section_seconds"] = time.perf_counter() - t0
    results[name]["measured_at"] = time.time()


def _fmt_pass(r: dict[str, Any]) -> str:
    if "error" in r:
        return "[red]error[/red]"
    if "pass" not in r:
        return "-"
    return "[green]yes[/green]" if r["pass"] else "[red]no[/red]"


def render(results: dict[str, Any]) -> Any:
    """The rich table of every figure."""
    from rich.table import Table

    m = results["machine"]
    title = (f"zk0 benchmarks — {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"
             f"{', ' + m['gpu'] if m['gpu'] else ''}; torch {m['torch']}, flwr {m['flwr']}, "
             f"lerobot {m['lerobot']}; load avg {m['load_average_1m']}→"
             f"{results.get('load_average_1m_end')}; device {results['device']}"
             f"{' (quick)' if results['quick'] else ''}")
    t = Table(title=title, show_lines=True)
    for col in ("figure", "measured", "target", "met"):
        t.add_column(col)
    w = results.get("wire", {})
    if "error" in w:
        t.add_row("(a) bytes per client per round", w["error"], "", _fmt_pass(w))
    elif w:
        t.add_row("(a) bytes per client per round, full-size SmolVLA "
                  f"({w['trainable_parameters']:,} of {w['parameters']:,} params train)",
                  f"trainable bf16 {w['bytes_trainable_bf16'] / GB:.3f} GB\n"
                  f"trainable fp32 {w['bytes_trainable_fp32'] / GB:.3f} GB\n"
                  f"whole model fp32 {w['bytes_whole_fp32'] / GB:.3f} GB\n"
                  f"→ {w['reduction_vs_whole_fp32']:.1f}× less; encode "
                  f"{w['encode_bf16_seconds']:.1f} s, decode {w['decode_bf16_seconds']:.1f} s",
                  "≤ 0.21 GB, ≥ 8× less", _fmt_pass(w))
        lora = w.get("lora")
        if lora:
            lines = [f"rank {r}: ffa {v['ffa']['bytes_bf16'] / 1e6:.2f} MB, naive "
                     f"{v['naive']['bytes_bf16'] / 1e6:.2f} MB" for r, v in lora["by_rank"].items()]
            lines.append(f"→ {lora['reduction_vs_full_expert']:.0f}× less than the full expert "
                         "at rank 16 (ffa)")
            t.add_row(f"(a') bytes per client per round with LoRA on {lora['adapted_modules']} "
                      "modules (model.peft, bf16)", "\n".join(lines), "≤ 0.02 GB at rank 16",
                      _fmt_pass(lora))
    sm = results.get("server_memory", {})
    if "error" in sm:
        t.add_row("(b) server process peak RSS", sm["error"][:300], "", _fmt_pass(sm))
    elif sm:
        lines = [f"{n} clients: {r['peak_rss_bytes'] / GB:.2f} GB ({r['wall_seconds']:.0f} s)"
                 for n, r in sm["by_clients"].items()]
        lines.append(f"max/min = {sm['ratio_max_vs_min']:.2f}")
        t.add_row("(b) peak RSS of `zk0 simulate`'s server process (flwr-simulation), "
                  "full-size SmolVLA, 1 round, bf16", "\n".join(lines),
                  "16 clients ≤ 1.2× 2 clients", _fmt_pass(sm))
    a = results.get("aggregation", {})
    if "error" in a:
        t.add_row("(b) server peak RSS", a["error"][:300], "", _fmt_pass(a))
    elif a:
        lines = [f"{r['mode']:6} {r['clients']} clients: {r['peak_rss_bytes'] / GB:.2f} GB "
                 f"({r['aggregation_seconds']:.1f} s aggregating)" for r in a["runs"]]
        if "stream_ratio_max_vs_min" in a:
            lines.append(f"stream max/min = {a['stream_ratio_max_vs_min']:.2f}")
        t.add_row("(b') peak RSS of aggregate_train alone, full-size bf16 replies "
                  "(stream = one at "
                  "a time; held = all N in memory first, as Flower's Grid returns them)",
                  "\n".join(lines), "8 clients ≤ 1.2× 2 clients (stream)", _fmt_pass(a))
    o = results.get("overhead", {})
    if "error" in o:
        t.add_row("(c) round overhead, simulation", o["error"][:300], "", _fmt_pass(o))
    elif o:
        rows = ", ".join(f"r{r['round']}: {r['seconds']:.2f}−{r['client_seconds_max']:.2f}"
                         for r in o["per_round"])
        med = o["overhead_seconds_median"]
        t.add_row("(c) round overhead, `zk0 simulate` tiny, 2 clients (round s − slowest "
                  "client's training s; rounds between the first and the last)",
                  f"median {med:.2f} s\n{rows}\nwarm-up round {o['warmup_round_seconds']:.1f} s"
                  f"; whole run {o['wall_seconds']:.0f} s" if med is not None else rows,
                  "≤ 1 s", _fmt_pass(o))
    d = results.get("throughput", {})
    if "error" in d:
        t.add_row("(d) trainer throughput", d["error"][:300], "", _fmt_pass(d))
    elif d:
        lines = [f"workers {r['num_workers']}: zk0 {r['zk0_steps_per_s']:.1f} / plain "
                 f"{r['plain_steps_per_s']:.1f} steps/s = {r['ratio']:.2f}; data wait "
                 f"{100 * r['zk0_data_wait_share']:.0f}% / {100 * r['plain_data_wait_share']:.0f}%"
                 for r in d["runs"]]
        t.add_row(f"(d) zk0 trainer vs plain LeRobot loop, tiny model, batch {d['batch_size']} "
                  f"(checked at the default {d['default_num_workers']} workers)",
                  "\n".join(lines), "ratio ≥ 0.95", _fmt_pass(d))
    e = results.get("tiny_run", {})
    if e:
        val = (f"{e['wall_seconds']:.0f} s (exit {e['exit_code']})" if e.get("measured")
               else f"not measured: {e.get('reason') or e.get('error')}")
        t.add_row("(e) `zk0 tiny-run` cold wall time", val, "-", "-")
    g = results.get("gpu")
    if g:
        if "error" in g or not g.get("measured"):
            t.add_row("(f) GPU, full-size SmolVLA", g.get("error") or g.get("reason"), "-", "-")
        else:
            lines = [f"batch {r['batch_size']}: {r['steps_per_s']:.2f} steps/s, peak "
                     f"{r['peak_gpu_bytes'] / GB:.1f} GB" for r in g["runs"]]
            t.add_row("(f) GPU full-size SmolVLA training, bf16 autocast", "\n".join(lines),
                      "-", "-")
    dp = results.get("deploy_overhead", {})
    if "error" in dp:
        t.add_row("(g) round overhead, deployment", dp["error"][:300], "", _fmt_pass(dp))
    elif dp:
        lines = []
        for mode in ("warm", "cold"):
            r = dp.get(mode)
            if r:
                rows = ", ".join(f"r{x['round']}: {x['seconds']:.1f}−"
                                 f"{x['client_seconds_max']:.1f}" for x in r["per_round"])
                lines.append(f"{mode}: median {r['overhead_seconds_median']:.2f} s ({rows})")
        t.add_row("(g) round overhead, `zk0 train --local-nodes 2` tiny, 5 rounds (round s − "
                  "slowest site's training s; rounds between the first and the last); warm = "
                  "one ClientApp process per SuperNode, cold = a fresh one per message",
                  "\n".join(lines), "warm ≤ 5 s", _fmt_pass(dp))
    return t


_TOP_LEVEL = {"machine", "device", "quick", "timestamp", "load_average_1m_end", "kept"}


def _keep_previous_sections(results: dict[str, Any], out: Path) -> None:
    """Copy the sections of the existing ``out`` file that this run did not measure.

    Their names go to ``results["kept"]`` with the machine they were measured on.
    """
    if not out.is_file():
        return
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
    except ValueError:
        return
    kept = dict(previous.get("kept", {}))
    for name, section in previous.items():
        if name in _TOP_LEVEL or name in results:
            continue
        results[name] = section
        kept.setdefault(name, {"machine": previous.get("machine"),
                               "quick": previous.get("quick"),
                               "timestamp": previous.get("timestamp")})
    kept = {k: v for k, v in kept.items() if k in results and k not in _measured(results)}
    if kept:
        results["kept"] = kept


def _measured(results: dict[str, Any]) -> set[str]:
    return {k for k, v in results.items() if isinstance(v, dict) and "section_seconds" in v
            and v.get("measured_at", 0) >= results["timestamp"]}


def main() -> None:
    """Parse the flags, run every section, print the table, write the JSON."""
    p = argparse.ArgumentParser(description="zk0 performance benchmarks")
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds/steps/repeats (a few minutes on 2 cores)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda adds the full-size GPU training figures")
    p.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    p.add_argument("--only",
                   default="wire,server_memory,aggregation,overhead,throughput,tiny_run,gpu,"
                   "deploy_overhead",
                   help="comma-separated sections to run")
    args = p.parse_args()
    only = set(args.only.split(","))

    import logging

    from rich.console import Console

    logging.getLogger("zk0").setLevel(logging.WARNING)
    from machine import machine_info

    console = Console()
    results: dict[str, Any] = {"machine": machine_info(), "device": args.device,
                               "quick": args.quick, "timestamp": time.time()}
    work = Path(tempfile.mkdtemp(prefix="zk0-bench-"))
    shapes = work / "trainable_shapes.json"
    if "wire" in only or "aggregation" in only:
        from wire import measure_wire

        console.print("(a) building the full-size SmolVLA and encoding it...")
        _run("wire", lambda: measure_wire(shapes), results)
    if "aggregation" in only and shapes.is_file():
        from aggregate import measure_aggregation

        console.print("(b) aggregating full-size replies, one process per count...")
        held = [8] if args.quick else [2, 4, 8]
        _run("aggregation", lambda: measure_aggregation(shapes, [2, 4, 8], held), results)
    if "server_memory" in only:
        from server_memory import measure_server_memory

        console.print("(b) zk0 simulate, full-size SmolVLA, 2/4/8/16 clients...")
        _run("server_memory", lambda: measure_server_memory(work, [2, 4, 8, 16]), results)
    if "overhead" in only:
        from overhead import measure_overhead

        console.print("(c) zk0 simulate, tiny model, 2 clients...")
        _run("overhead", lambda: measure_overhead(work, rounds=4 if args.quick else 6),
             results)
    if "throughput" in only:
        from throughput import measure_throughput

        console.print("(d) trainer vs plain LeRobot loop...")
        _run("throughput", lambda: measure_throughput(
            work, steps=30 if args.quick else 60, repeats=2 if args.quick else 3,
            batch_size=8, workers=[0, 1] if args.quick else [0, 1, 2], device=args.device),
            results)
    if "tiny_run" in only:
        from overhead import measure_tiny_run

        console.print("(e) zk0 tiny-run, cold...")
        _run("tiny_run", lambda: measure_tiny_run(work), results)
    if "deploy_overhead" in only:
        from overhead import measure_deploy_overhead

        console.print("(g) zk0 train --local-nodes 2, tiny model, warm and cold ClientApps...")
        _run("deploy_overhead", lambda: measure_deploy_overhead(work, rounds=5), results)
    if "gpu" in only and args.device == "cuda":
        from gpu import measure_gpu

        console.print("(f) full-size SmolVLA on the GPU...")
        _run("gpu", lambda: measure_gpu(batch_sizes=[16, 64], steps=5 if args.quick else 20),
             results)
    results["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    _keep_previous_sections(results, args.out)
    console.print(render(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
