"""The two figures of RESULTS.md, drawn from the numbers the benchmarks return (not from their text).

    plot_matmul({1: bench_matmul.measure(...), 2: ...}, "matmul_gflops.png")
    plot_train_step(bench_train_step.measure(...), "train_step.png")

matplotlib's Agg backend draws to files only, so this runs on a machine without a display.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

COLORS = {"minidl": "tab:blue", "numpy": "tab:orange", "torch": "tab:red"}


def plot_matmul(by_threads, path):
    """GFLOP/s against n (log scale) for each library, one panel per thread count."""
    fig, axes = plt.subplots(1, len(by_threads), figsize=(5 * len(by_threads), 4), sharey=True, squeeze=False)
    for ax, (threads, data) in zip(axes[0], sorted(by_threads.items())):
        sizes = [row["n"] for row in data["rows"]]
        for lib in data["libraries"]:
            ax.plot(sizes, [row[lib] for row in data["rows"]], "o-", color=COLORS.get(lib), label=lib)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("n (n x n @ n x n, float32)")
        ax.set_title(f"matmul, {threads} thread{'s' if int(threads) > 1 else ''}")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("GFLOP/s (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_train_step(data, path):
    """Per model: torch's step time beside minidl's, minidl's split into kernels and Python overhead
    (a black line marks minidl's step time as timed in its own process, the table's minidl column).

    Each model gets its own panel (and y scale): steps range from under a millisecond to tens."""
    models = data["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(2.4 * len(models) + 1, 3.8), squeeze=False)
    for ax, r in zip(axes[0], models):
        # minidl's bar is the profiling process's plain step, split as it measured it; the overhead is a
        # difference of two medians, below zero only from noise, and then drawn as nothing.
        kernel, overhead = r["kernel_ms"], max(r["overhead_ms"], 0.0)
        ax.bar(0, kernel, color="tab:blue", label="minidl: in kernels")
        ax.bar(0, overhead, bottom=kernel, color="lightsteelblue", label="minidl: Python overhead")
        ax.hlines(r["minidl_ms"], -0.45, 0.45, colors="black", label="minidl step, its own process (table)")
        ax.bar(1, r["torch_ms"], color="tab:red", label="torch")
        ax.set_xticks([0, 1], ["minidl", "torch"])
        ax.set_title(r["label"].replace(", ", "\n"), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ms per training step (lower is better)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle(f"training step (forward, loss, backward, AdamW, zero grad), {data['threads']} thread(s)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
