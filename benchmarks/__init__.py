"""Measurements of SPGNet's speed, one module per section of the benchmark; the command lines are
scripts/benchmark.py, scripts/benchmark_metrics.py and scripts/gpu_check.sh.

    timing      wall/CPU time of repeated calls, peak memory, the machine          (every section uses it)
    inputs      config modes, the tiny-network overrides, random batches and networks, a synthetic set
    flops       convolution/matmul GFLOP of each step piece (meta device) and the floor of a reference conv
    train_step  the full joint training step (and a torch.profiler view of one)
    breakdown   the step's pieces timed one at a time
    inference   test-time generation
    pose        encode_pose on one thread, batched, on the device
    loader      the training DataLoader alone; the time a training loop blocks waiting on it
    end_to_end  test.py from start-up to the last image
    metrics     each evaluation metric as evaluate.py computes it, PCKh's OpenPose included
    suite       scripts/benchmark.py's run: the sections above over the modes, into one report
    report      that report as Markdown
    gpu_check   the one-command GPU session: training with real data, test.py, every protocol's metrics

The package sits at the scripts' layer: it imports the project's packages and entry points, never a script.
"""
