"""The ``looptune`` command line: tune one op, show a saved schedule, evaluate searches on a
dataset (the paper's table), train an agent.

    looptune tune matmul 128 256 64
    looptune tune conv2d 1 64 56 56 64 3 3 --pad 1 --search greedy2 --save conv.lt
    looptune tune matmul 128 768 3072 --threads 2 --compare numpy,torch   # all at 2 threads
    looptune show conv.lt --benchmark
    looptune eval --dataset mm64_256_16 --split test --limit 25 --out results.json

Bad arguments exit with status 2 and a one-line message; failures at run time with 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from looptune import search


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _threads(text: str) -> int:
    """``--threads N`` or ``--threads all`` (the cores this process may use)."""
    from looptune.threads import resolve_threads

    try:
        return resolve_threads(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threads_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    p.add_argument(
        "--threads", type=_threads, default=1, metavar="N",
        help=f"threads: a count or 'all' (the cores this process may use); {what}",
    )


def _size(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE (e.g. m=128), got {text!r}")
    return name, _positive_int(value)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help, except for flags and where the default is
    None: there the help itself says what is used (never "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


_FMT = {"formatter_class": _HelpFormatter}


def _epilogue_option(p: argparse.ArgumentParser, channel: str) -> None:
    p.add_argument(
        "--epilogue",
        default="",
        metavar="SPEC",
        help="fused after the reduction: terms joined by '+' in order, optional 'bias' (one "
        f"per {channel}), optional 'add' (a residual of the output's shape), optional "
        "'relu' | 'relu6' | 'gelu' (exact); e.g. bias+relu, bias+add+relu",
    )


def _dtype_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "int8"),
        help="int8: u8 activations times s8 weights summed exactly in int32 (VNNI vpdpbusd "
        "where the CPU has it); figures are then GOP/s, the references numpy / PyTorch in "
        "float32 and torch._int_mm; an --epilogue must start with 'scale' (float32 output)",
    )


def _layout_option(p: argparse.ArgumentParser, blocked: str) -> None:
    p.add_argument(
        "--layout",
        default="auto",
        metavar="{auto,plain,blocked,blockedL}",
        help=f"the kernel's data layout; auto: the op's default for this size and ISA; "
        f"{blocked}. Inputs and outputs stay plain arrays either way",
    )


def _compare(text: str) -> str:
    from looptune.cli.commands import parse_compare

    try:
        return ",".join(parse_compare(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _tune_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("tuning")
    g.add_argument(
        "--search",
        choices=search.NAMES,
        default=None,
        help="search to run (default: the shipped agent, which runs without torch; greedy2 if "
        "its policy cannot be loaded)",
    )
    g.add_argument(
        "--time-budget",
        type=_nonneg_float,
        default=10.0,
        metavar="SECONDS",
        help="wall-clock budget of the search",
    )
    g.add_argument(
        "--measure-budget",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N fresh measurements (default: unlimited)",
    )
    g.add_argument(
        "--actions",
        choices=("paper", "rich"),
        default="paper",
        help="action set: the paper's 7 actions, or rich (more splits, merge, unroll)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the random search")
    g.add_argument(
        "--save", metavar="FILE", help="write the tuned schedule to FILE (read by `show`)"
    )
    g.add_argument(
        "--records",
        metavar="FILE",
        help="tuning records (JSON Lines): reuse the measurements in FILE and append new ones",
    )
    g.add_argument(
        "--compare",
        type=_compare,
        default="numpy",
        metavar="LIBS",
        help="references timed beside the kernel, comma-separated: numpy, torch (importing "
        "torch adds ~2 s)",
    )
    _threads_option(g, "the search times schedules on N threads and may mark a loop "
                    "parallel; numpy and PyTorch are timed on N threads too")
    g.add_argument("--json", action="store_true", help="print machine-readable JSON")
    g.add_argument("-q", "--quiet", action="store_true", help="no notes and no progress bar")
    return p


def _policy_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("policy (the agent search)")
    g.add_argument(
        "--policy", default=None, metavar="FILE",
        help="a .safetensors policy (default: the one shipped for this CPU)",
    )
    g.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also accept an SB3 .zip policy: UNPICKLING RUNS ANY CODE IN THE FILE",
    )
    return p


def _add_tune(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser(
        "tune",
        help="tune one operator and compare it with numpy",
        description="Tune one operator, check it against numpy and compare their speed.",
    )
    ops = tune.add_subparsers(dest="op", metavar="OP", required=True, help="the operator")
    common = [_tune_options(), _policy_options()]
    p = ops.add_parser("matmul", parents=common, help="C[m,n] = A[m,k] B[k,n]", **_FMT)
    for dim, what in (("m", "rows of A and C"), ("k", "the reduction"), ("n", "columns of B, C")):
        p.add_argument(dim, type=_positive_int, help=f"{dim}: {what}")
    _layout_option(p, "B in column panels of L floats (blocked: the vector width)")
    _epilogue_option(p, "N (the columns of C)")
    _dtype_option(p)
    p = ops.add_parser(
        "bmm", parents=common, help="batched matmul C[b,m,n] = A[b,m,k] B[b,k,n]", **_FMT
    )
    for dim, what in (
        ("b", "batch"),
        ("m", "rows of A and C"),
        ("k", "the reduction"),
        ("n", "columns of B, C"),
    ):
        p.add_argument(dim, type=_positive_int, help=f"{dim}: {what}")
    _epilogue_option(p, "n (the columns of C)")
    _dtype_option(p)
    p = ops.add_parser(
        "conv2d", parents=common, help="2-D convolution, NCHW input and KCRS weights", **_FMT
    )
    for dim, what in (
        ("N", "batch"),
        ("C", "input channels"),
        ("H", "input height"),
        ("W", "input width"),
        ("K", "output channels"),
        ("R", "filter height"),
        ("S", "filter width"),
    ):
        p.add_argument(dim, type=_positive_int, help=f"{dim}: {what}")
    p.add_argument("--stride", type=_positive_int, default=1, help="stride of H and W")
    _layout_option(p, "output channels (and weights) in blocks of L (blocked: the vector width)")
    p.add_argument("--pad", type=int, default=0, help="zero padding on each side of H and W")
    p.add_argument(
        "--groups",
        type=_positive_int,
        default=1,
        help="grouped convolution: weights [K, C/G, R, S]; G divides C and K (G = C = K: "
        "depthwise)",
    )
    _epilogue_option(p, "K (the output channels)")
    _dtype_option(p)
    p = ops.add_parser(
        "einsum",
        parents=common,
        help='a contraction, e.g. einsum "mk,kn->mn" m=128 k=64 n=256',
        **_FMT,
    )
    p.add_argument("spec", help='two inputs and the output, e.g. "bmk,bkn->bmn"')
    p.add_argument(
        "sizes", nargs="+", type=_size, metavar="NAME=SIZE", help="the size of every index"
    )
    tune.set_defaults(func="tune")


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="print a saved schedule", **_FMT)
    p.add_argument("file", help="a schedule written by `looptune tune --save`")
    p.add_argument(
        "--benchmark", action="store_true", help="also check, compile and time it against numpy"
    )
    p.set_defaults(func="show")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="the paper's table: searches compared on a dataset", **_FMT)
    p.add_argument("--dataset", default="mm64_256_16", help="a looptune.datasets name")
    p.add_argument("--split", default="test", help="train, test or all")
    p.add_argument(
        "--searches",
        default=",".join(search.NAMES),
        help="comma-separated search names",
    )
    p.add_argument("--limit", type=_positive_int, default=25, help="first N benchmarks")
    p.add_argument(
        "--time-budget",
        type=_nonneg_float,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock budget of each search on each benchmark",
    )
    p.add_argument(
        "--measure-budget",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N fresh measurements per search and benchmark (default: unlimited)",
    )
    p.add_argument(
        "--actions", choices=("paper", "rich"), default="paper", help="action set of the searches"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random search")
    _threads_option(p, "every search times its schedules on N threads")
    p.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="skip searches that cannot run here (e.g. the agent without a policy)",
    )
    p.add_argument("--out", metavar="JSON", help="write summary and per-benchmark rows")
    p.add_argument("--csv", metavar="CSV", help="write the summary table")
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="write PNG plots into DIR: gflops_per_benchmark.png (every search on every "
        "benchmark) and quality_vs_time.png (needs matplotlib: the bench extra)",
    )
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar"
    )
    _ray_option(p, "searches", records=True)
    p.set_defaults(func="eval")


def _ray_option(p: argparse.ArgumentParser, what: str, records: bool = False) -> None:
    p.add_argument(
        "--ray", default=None, metavar="ADDR",
        help=f"run the {what} on a Ray cluster (the ray extra), one per core of every node: "
        "ADDR is a cluster address (auto, HOST:6379, ray://HOST:10001) or 'local'",
    )
    if records:
        p.add_argument("--records", default=None, metavar="JSONL",
                       help="with --ray: append every measurement, keyed by the node's CPU")


def build_parser() -> argparse.ArgumentParser:
    from looptune import __version__

    parser = argparse.ArgumentParser(
        prog="looptune", description=__doc__.split("\n\n")[0].replace("``", ""), **_FMT
    )
    parser.add_argument("--version", action="version", version=f"looptune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="what to do")
    _add_tune(sub)
    _add_show(sub)
    _add_eval(sub)
    _add_leaderboard(sub)
    train = sub.add_parser(
        "train", help="train an agent (`looptune train --help` lists its options)"
    )
    train.add_argument("args", nargs=argparse.REMAINDER, help="options of looptune.agent.train")
    train.set_defaults(func="train")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # everything after "train" belongs to the training script
        return _guarded(lambda: _commands().train_script(argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return _guarded(lambda: getattr(_commands(), args.func)(args))


def _commands():
    from looptune.cli import commands

    return commands


def _guarded(run: Callable[[], int]) -> int:
    from looptune.errors import LoopTuneError

    try:
        return run()
    except (ValueError, TypeError, KeyError, FileNotFoundError, IsADirectoryError) as exc:
        return _fail(exc, 2)
    except (LoopTuneError, OSError, RuntimeError, ImportError) as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print("looptune: interrupted", file=sys.stderr)
        return 130


def _fail(exc: BaseException, code: int) -> int:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    print(f"looptune: error: {message}", file=sys.stderr)
    return code


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="race every tuner against numpy, PyTorch and TVM on a fixed suite",
        description="Run the leaderboard suite (or validate / merge result files).",
    )
    p.add_argument("--part", action="append", help="suite part (repeatable; default all)")
    p.add_argument("--quick", action="store_true",
                   help="a run of about a minute: the quick subset of each part (6 benchmarks), "
                   "--budget 1 and --searches base,greedy2,agent unless given")
    p.add_argument("--benchmarks", default=None, metavar="NAMES",
                   help="only these comma-separated benchmarks of the selected parts")
    p.add_argument("--searches", default=None,
                   help="comma-separated, or 'none' (default: every search; with --quick "
                   "base,greedy2,agent)")
    p.add_argument("--budget", type=_nonneg_float, default=None, metavar="SECONDS",
                   help="tuning time per benchmark per entrant (default 10; 1 with --quick)")
    p.add_argument("--entrant", action="append", default=[], metavar="MODULE:ATTR",
                   help="a plug-in tuner: tune(computation, budget) -> LoopTree (repeatable)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    _threads_option(p, "looptune's entrants tune and run on N threads, numpy and PyTorch are "
                    "timed on N threads (TVM runs as it is)")
    p.add_argument("--no-tvm", action="store_true", help="skip TVM")
    p.add_argument("--tvm-python", default=None, metavar="PYTHON",
                   help="interpreter with apache-tvm (default $LOOPTUNE_TVM_PYTHON)")
    p.add_argument("--tvm-trials", type=_positive_int, default=64, metavar="N",
                   help="MetaSchedule trials per benchmark (default 64)")
    p.add_argument("--tvm-records", default=None, metavar="DIR",
                   help="where tuned TVM records are kept (default ~/.cache/looptune-tvm)")
    p.add_argument("--tvm-cached-only", action="store_true",
                   help="never tune MetaSchedule: use its records, 'not run' elsewhere")
    p.add_argument("--tvm-only", default=None, metavar="NAMES",
                   help="run TVM only on these comma-separated benchmarks")
    p.add_argument("--out", default="leaderboard.json", metavar="JSON",
                   help="result file (default leaderboard.json)")
    p.add_argument("--table", default=None, metavar="MD", help="also write the tables here")
    p.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots here")
    p.add_argument("--validate", default=None, metavar="JSON",
                   help="replay the schedules of a result file instead of running")
    p.add_argument("--tolerance", type=_nonneg_float, default=None,
                   help="validation: allowed shortfall of re-timed GFLOP/s (default 0.25)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge result files into --out instead of running")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _ray_option(p, "entrants")
    p.set_defaults(func="leaderboard")
