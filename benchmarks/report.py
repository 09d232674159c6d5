"""scripts/benchmark.py's report as Markdown: a header, then one block per section that ran."""

from __future__ import annotations


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def memory_text(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "cuda_max_allocated_mb" in mem:
        return f"{mem['cuda_max_allocated_mb'] / 1024:.2f} GiB (cuda)"
    return f"{mem['host_peak_rss_mb'] / 1024:.2f} GiB (RSS)"


def rate(gflop: float | None, seconds: float | None) -> str:
    return f"{gflop / seconds:.0f}" if gflop and seconds else "-"


def step_median(r: dict, mode: str) -> float | None:
    """The measured full step of a mode, or None when its train section did not run."""
    return r["modes"].get(mode, {}).get("train", {}).get("step", {}).get("median_s")


def header(r: dict) -> list[str]:
    h, w = r["image_size"]
    flops = r.get("gflop", {})
    return [f"# SPGNet benchmark: {r['config']} {' '.join(r['overrides'])}".rstrip(),
            "",
            f"device {r['device']} ({r['machine'].get('gpu_name', r['machine']['cpu_model'])}), "
            f"{r['threads']} torch threads, torch {r['torch']}, image {h}x{w}, train batch {r['batch_size']}, "
            f"inference batch {r['infer_batch_size']}, {r['warmup']} warm-up + {r['iters']} timed iterations.",
            f"Perceptual loss: RANDOM-INIT VGG19 (weights=random; same cost as ImageNet weights). Flow: "
            f"{r['flow']}. Discriminator on: {r['discriminator_on']}.",
            f"Convolution/matmul work: {flops.get('train_step') or 0:.0f} GFLOP per training step, "
            f"{flops.get('inference_batch') or 0:.0f} GFLOP per inference batch (torch.utils.flop_counter, 2 FLOP "
            "per multiply-add)."]


def modes_table(r: dict) -> list[str]:
    """One row per mode: the training step's spread, rates, floor, inference and peak memory."""
    flops = r.get("gflop", {})
    step_gflop, infer_gflop = flops.get("train_step"), flops.get("inference_batch")
    lines = ["", "## Training step and inference", "",
             "| mode | step median | min | max | IQR | CPU time/step | train images/s | GFLOP/s | floor | "
             "inference images/s | peak memory (train) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, m in r["modes"].items():
        if "train" not in m:
            lines.append(f"| {mode} | {m.get('error', 'not run')} | | | | | | | | | |")
            continue
        ref = m["train"].get("reference_conv", {}).get("gflop_per_s")
        floor = fmt(step_gflop / ref) if step_gflop and ref else "-"
        s = m["train"]["step"]
        inf = m.get("infer", {})
        inf_text = (f"{inf['images_per_s']:.2f} ({rate(infer_gflop, inf['forward']['median_s'])} GFLOP/s)"
                    if "images_per_s" in inf else inf.get("error", "-"))
        lines.append(f"| {mode} | {fmt(s['median_s'])} | {fmt(s['min_s'])} | {fmt(s['max_s'])} | "
                     f"{fmt(s['q3_s'] - s['q1_s'])} | {fmt(s['cpu_median_s'])} | {m['train']['images_per_s']:.2f} | "
                     f"{rate(step_gflop, s['median_s'])} | {floor} | {inf_text} | "
                     f"{memory_text(m['train'].get('memory'))} |")
    return lines


def breakdown_tables(r: dict) -> list[str]:
    """Per broken-down mode: each piece's time, CPU time, share of the measured step and GFLOP/s."""
    flops = r.get("gflop", {})
    step_gflop, part_gflop = flops.get("train_step"), flops.get("parts", {})
    lines = []
    for mode, parts in r.get("breakdown", {}).items():
        step = step_median(r, mode)
        lines += ["", f"## Breakdown of one training step ({mode})", ""]
        if "error" in parts:
            lines.append(f"error: {parts['error']}")
            continue
        lines += ["| component | median | CPU time | share of step | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
        for name, s in parts.items():
            share = f"{100 * s['median_s'] / step:.0f}%" if step else "-"
            gflop = part_gflop.get(name)
            lines.append(f"| {name} | {fmt(s['median_s'])} | {fmt(s.get('cpu_median_s'))} | {share} | "
                         f"{f'{gflop:.1f}' if gflop else '-'} | "
                         f"{rate(gflop, s['median_s'])} |")
        if step:
            lines.append(f"| full step (measured) | {fmt(step)} | - | 100% | {step_gflop or 0:.1f} | "
                         f"{rate(step_gflop, step)} |")
    return lines


def pose_table(p: dict, h: int, w: int) -> list[str]:
    lines = ["", f"## Pose encoding ({h}x{w}, 30 maps per pose)", ""]
    if "error" in p:
        return lines + [f"error: {p['error']}"]
    return lines + ["| how | poses/s |", "|---|---|",
                    f"| CPU, one thread, one pose at a time | {p['cpu_single_thread_per_pose']['poses_per_s']:.1f} |",
                    f"| CPU, {p['cpu_batched']['threads']} threads, batch {p['batch_size']} | "
                    f"{p['cpu_batched']['poses_per_s']:.1f} |",
                    f"| {p['device_batched']['device']}, batch {p['batch_size']} | "
                    f"{p['device_batched']['poses_per_s']:.1f} |"]


def loader_lines(lo: dict) -> list[str]:
    lines = ["", "## DataLoader alone", ""]
    if "samples_per_s" not in lo:
        return lines + [lo.get("error") or lo.get("skipped", "")]
    lines.append(f"{lo['samples_per_s']:.1f} samples/s ({fmt(lo['s_per_batch'])} per batch of "
                 f"{lo['batch_size']}, {lo['workers']} workers, first batch after {fmt(lo['first_batch_s'])}). "
                 "Loader time per batch / step time (over 1: the device would wait on data):")
    lines += ["", "| mode | data-wait fraction |", "|---|---|"]
    return lines + [f"| {k} | {v:.2f} |" for k, v in lo.get("wait_fraction", {}).items()]


def end_to_end_lines(t: dict) -> list[str]:
    lines = ["", "## test.py end to end", ""]
    if "pairs_per_s" not in t:
        return lines + [t.get("error") or t.get("skipped", "")]
    return lines + [f"{t['pairs']} pairs in {fmt(t['wall_s'])}: {t['pairs_per_s']:.2f} pairs/s (batch "
                    f"{t['batch_size']}, {t['workers']} workers; {t['note']})."]


def markdown(report: dict) -> str:
    r = report
    lines = header(r) + modes_table(r) + breakdown_tables(r)
    if "pose" in r:
        lines += pose_table(r["pose"], *r["image_size"])
    if "loader" in r:
        lines += loader_lines(r["loader"])
    if "test" in r:
        lines += end_to_end_lines(r["test"])
    if r["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines)


def profile_table(profile: dict, top: int) -> list[str]:
    """torch.profiler's top ops of one step (--profile N), printed after the report."""
    lines = ["", f"## torch.profiler, one step ({profile['mode']}): top {top} ops by self time", "",
             "| op | calls | self time |", "|---|---|---|"]
    return lines + [f"| {e['op']} | {e['calls']} | {e['self_ms']:.1f} ms |" for e in profile["top_ops"]]
