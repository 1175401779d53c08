"""Type stub for the compiled engine (cpp/bindings). Keep in sync with the bindings."""

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

MAX_TREE_LOOPS: int  # loops a tree can hold (split is illegal beyond this)
MAX_LOOPS: int  # the old name of MAX_TREE_LOOPS
MAX_UNROLL: int  # turning unroll on needs the cursor loop's size <= this
MAX_EXTENT: int  # largest size of one variable
MAX_VARS: int  # variables per computation
DEFAULT_MAX_LOOPS: int  # depth cap of envs, searches and agents (looptune.space.MAX_LOOPS)

class Var:
    name: str
    extent: int
    reduction: bool

class Tensor:
    name: str
    shape: tuple[int, ...]  # user-facing (unpadded) shape
    alloc_shape: tuple[int, ...]  # buffer the kernel reads (conv padding; longer rows vs aliasing)
    pad: tuple[int, ...]  # leading padding per dimension
    strides: dict[str, int]  # element stride (in alloc_shape) per variable name; 0 if unused
    # int8 inputs: shape counts the user's bytes; alloc_shape and strides count the kernel
    # buffer's 32-bit words, each 4 consecutive reduction values (zero-padded)

class Computation:
    kind: str  # "matmul" | "batch_matmul" | "conv2d" | "contraction"
    spec: str  # einsum-like, e.g. "mk,kn->mn"
    conv_stride: int  # conv2d only (1 otherwise)
    conv_pad: int  # conv2d only (0 otherwise)
    block: int  # blocked layout: conv2d output channels / matmul B column panels; 0 = plain
    groups: int  # conv2d only: grouped convolution (1: plain)
    # "float32", or "int8": a uint8 (activations) times b int8 (weights) summed exactly in
    # int32; the loop nest is float32's with the reduction variable (k; c of a conv2d)
    # counting groups of 4 values (extent ceil(k / 4); per conv group ceil(c / groups / 4)),
    # zero-padded in the kernel's buffers (b in the VNNI layout [K/4][N][4])
    dtype: str
    # the pointwise epilogue after the reduction: "bias", "bias+add+relu", ...; "" for none
    epilogue: str
    bias_shape: tuple[int, ...]  # the epilogue bias: (output channels,)
    def with_epilogue(self, epilogue: str) -> Computation: ...
    name: str  # short id, e.g. "mm128_256_64"
    flops: int
    vars: list[Var]
    inputs: tuple[Tensor, Tensor]
    output: Tensor
    def header(self) -> str: ...
    def default_schedule(self) -> LoopTree: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

# layout: "auto" (op default for the host vector width), "plain", "blocked" or "blocked<L>"
# epilogue: terms joined by "+" in order: optional "bias", optional "add", optional
# "relu" | "relu6" | "gelu": out = act(acc + bias[channel] + residual); ValueError otherwise
# dtype: "float32" | "int8" (see Computation.dtype). An int8 computation's output is int32
# without an epilogue; its epilogue starts with "scale" ("scale", "scale+bias+relu", ...) and
# gives float32 act(float(acc) * scale[channel] + bias[channel] + residual); float32
# computations never take "scale". An int8 epilogue may end with "requant"
# ("scale+bias+relu+requant"): the output is then uint8 = quantize_u8(that float32, out_scale,
# out_zero_point) bit for bit (Kernel.__call__ / set_constant). int8 refuses (ValueError)
# more than 65793 products per output element (k, or c / groups * r * s), where an int32 sum
# could overflow.
def matmul(
    m: int, k: int, n: int, layout: str = "auto", epilogue: str = "", dtype: str = "float32"
) -> Computation: ...
def batch_matmul(
    b: int, m: int, k: int, n: int, epilogue: str = "", dtype: str = "float32"
) -> Computation: ...
def conv2d(
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    r: int,
    s: int,
    stride: int = 1,
    pad: int = 0,
    layout: str = "auto",
    groups: int = 1,  # weights [k, c // groups, r, s]; groups divides c and k
    epilogue: str = "",
    dtype: str = "float32",
) -> Computation: ...
def contraction(spec: str, sizes: dict[str, int], epilogue: str = "") -> Computation: ...
def parse_computation(header: str) -> Computation: ...

class Loop:
    var: str  # variable name
    step: int
    size: int  # full iterations
    tail: int  # leftover elements (partial iteration)
    range: int  # elements covered per iteration of its parent (size * step + tail)
    unroll: bool
    vectorize: bool
    parallel: bool  # iterations shared among threads

class LoopTree:
    computation: Computation
    loops: list[Loop]  # outer to inner
    cursor: int
    depth: int
    parallel_loop: int | None  # index of the parallel loop
    def dump(self) -> str: ...
    @staticmethod
    def parse(text: str) -> LoopTree: ...
    def hash(self) -> int: ...  # schedule identity (ignores the cursor)
    def state_hash(self) -> int: ...  # includes the cursor
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    # pure mutations (raise looptune.IllegalActionError when illegal)
    def up(self) -> LoopTree: ...
    def down(self) -> LoopTree: ...
    def swap_up(self) -> LoopTree: ...
    def swap_down(self) -> LoopTree: ...
    def split(self, factor: int) -> LoopTree: ...
    def merge(self) -> LoopTree: ...
    def toggle_unroll(self) -> LoopTree: ...
    def toggle_vectorize(self) -> LoopTree: ...
    def toggle_parallel(self) -> LoopTree: ...
    def apply(self, action: str) -> LoopTree: ...
    def try_apply(self, action: str) -> LoopTree | None: ...
    def is_legal(self, action: str) -> bool: ...
    def legal_mask(self, actions: Sequence[str]) -> npt.NDArray[np.bool_]: ...
    def legality(
        self, actions: Sequence[str], max_loops: int = ...
    ) -> tuple[npt.NDArray[np.bool_], list[str]]: ...  # (mask, reason per action; "" = legal)
    def try_apply_capped(self, action: str, max_loops: int = ...) -> LoopTree | None: ...
    # in_view / out_view: (shape, offset) of a larger caller buffer holding the input in the
    # kernel's layout / receiving the output (user or blocked layout) at that offset
    def compile(
        self,
        isa: str | None = None,
        *,
        in_view: tuple[Sequence[int], Sequence[int]] | None = None,
        out_view: tuple[Sequence[int], Sequence[int]] | None = None,
        # {"in0" | "in1" | "out": element strides per dim (array.strides // itemsize, >= 1)}:
        # calls then pass arrays with exactly those strides (ValueError otherwise), read /
        # written in place or packed at call time (Kernel.facts["access"])
        strides: dict[str, Sequence[int]] | None = None,
    ) -> Kernel: ...

class TimingResult:
    min_seconds: float
    median_seconds: float
    gflops: float  # from the best run
    median_gflops: float
    runs: int

class Kernel:
    tree: LoopTree
    isa: str
    facts: dict[str, float | int | bool | str]
    assembly: str
    # int8 kernels (tree.computation.dtype == "int8"): a uint8, b int8 in the user's layouts
    # ([M][K] / [K][N]; NCHW / [K][C/g][R][S]), out int32 without an epilogue, else float32;
    # scale (float32, bias_shape) required iff the epilogue names it (or set_constant(b,
    # scale=...)). Wrong dtypes: TypeError, never a cast. An epilogue ending in "requant":
    # out uint8 = quantize_u8(the float32 result, out_scale, out_zero_point); both required
    # (TypeError) unless fixed by set_constant; out_scale finite > 0 (as float32) and
    # out_zero_point in 0..255, else ValueError; dense buffers only (compile(strides=...):
    # CompileError); facts["epilogue_fused"]: requantized in the JIT's store (True) or by a
    # pass after it (False), the same bytes either way.
    # the buffer views it was compiled with: {"in0": (shape, offset) or None, "out": ...}
    views: dict[str, tuple[tuple[int, ...], tuple[int, ...]] | None]
    # the element strides it was compiled with: {"in0": tuple or None (dense), "in1", "out"}
    strides: dict[str, tuple[int, ...] | None]
    def __call__(
        self,
        a: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        b: npt.NDArray[np.float32] | npt.NDArray[np.int8] | None = None,  # None: set_constant's
        out: npt.NDArray[np.float32] | npt.NDArray[np.int32] | npt.NDArray[np.uint8] | None = None,
        *,
        bias: npt.NDArray[np.float32] | None = None,  # required iff the epilogue names it
        residual: npt.NDArray[np.float32] | None = None,  # (bias: or set_constant(b, bias))
        scale: npt.NDArray[np.float32] | None = None,  # int8 epilogues
        out_scale: float | None = None,  # "requant" epilogues (or set_constant)
        out_zero_point: int | None = None,
    ) -> npt.NDArray[np.float32] | npt.NDArray[np.int32] | npt.NDArray[np.uint8]: ...
    # Called by __call__ for arguments that are not numpy arrays, when set (looptune.interop
    # sets it: torch tensors); the engine raises its typed errors if this passes them on again
    _call_fallback: ClassVar[Callable[[Kernel, Any, Any, Any], Any]]
    has_constant: bool
    has_constant_bias: bool
    has_constant_scale: bool
    has_constant_requant: bool
    # keeps a packed copy of b (and of the epilogue's bias / scale / requant parameters, when
    # given)
    def set_constant(
        self,
        b: npt.NDArray[np.float32] | npt.NDArray[np.int8],
        bias: npt.NDArray[np.float32] | None = None,
        scale: npt.NDArray[np.float32] | None = None,
        out_scale: float | None = None,
        out_zero_point: int | None = None,
    ) -> None: ...
    # int8: each output channel's weight sum (int32 [N] of a matmul, [K] of a conv2d; TypeError
    # for float32 kernels, ValueError for batch_matmul). For activations quantized with zero
    # point zp: pass bias - zp * scale * sums as the epilogue's bias (exact zero-point removal)
    def weight_sums(self, b: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]: ...
    def benchmark(
        self,
        min_time: float = 0.01,
        min_runs: int = 3,
        max_runs: int = 100000,
        prepacked: bool = False,
        threads: int | None = None,  # None: looptune.get_num_threads()
    ) -> TimingResult: ...
    def threads_used(self, threads: int | None = None) -> int: ...

MAX_THREADS: int
def set_num_threads(n: int) -> None: ...  # use looptune.set_num_threads
def get_num_threads() -> int: ...
def host_isa() -> str: ...
def isa_supported(isa: str) -> bool: ...
def cpu_name() -> str: ...
def cpu_signature() -> str: ...
def check_action(action: str) -> None: ...  # ValueError unless a well-formed action name
def known_isas() -> list[str]: ...  # every ISA the engine generates code for, best first
def supported_isas() -> list[str]: ...  # those this CPU runs, best first
def isa_facts(
    isa: str | None = None,
) -> dict[str, int | str | bool]: ...  # isa, lanes, vector_registers, accumulator_registers,
# peak_fma_chains, l1d/l2/l3_bytes (CPUID; 0 when not reported), supported (by this CPU),
# vnni (AVX512-VNNI + VL), avx_vnni (VEX AVX-VNNI), int8_path: how this ISA's int8 kernels
# multiply here: "vnni_evex" | "vnni_vex" | "exact" (no VNNI: 16-bit products, two vpmaddwd
# per group of 4; exact) | "none" (LOOPTUNE_INT8_PATH=exact forces "exact", =vnni needs VNNI)
# Kernel.facts["int8_path"] tells which path a kernel was compiled with ("" for float32).
# int8 quantization (C++, vectorized): q uint8 = clamp(round_half_even(x / scale) + zp, 0,
# 255); without scale/zero_point they come from [min(x, 0), max(x, 0)] (PyTorch's dynamic
# quantization): scale = range / 255, zp = round(-min / scale). ValueError on non-finite x.
def quantize_u8(
    x: npt.NDArray[np.float32],
    scale: float | None = None,
    zero_point: int | None = None,
    out: npt.NDArray[np.uint8] | None = None,
    *,
    isa: str | None = None,
) -> tuple[npt.NDArray[np.uint8], float, int]: ...
# (large inputs run on the engine's pool at get_num_threads(); isa "avx512" | "avx2": the same
# results for every ISA and thread count)
# symmetric per-channel: scale[c] = max |w[c]| / 127 (1 if all zero), q = clamp(round(w /
# scale[c]), -127, 127); returns (q int8 of w's shape, scale float32 [w.shape[axis]])
def quantize_per_channel_s8(
    w: npt.NDArray[np.float32], axis: int = 0
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]: ...
# Row-wise float32 ops of transformer layers (C++, AVX-512 or AVX2+FMA; isa forces one; run on
# the engine's pool at get_num_threads() with the GIL released; results bit-identical for every
# thread count). x: float32, C-contiguous, >= 1 dim; out: None (a new array), x itself (in
# place) or an array of x's shape that does not overlap it. Returns out. Bad input: TypeError
# (not a native float32 array) or ValueError (0-d, not C-contiguous, shapes, eps, scale).
def gelu(
    x: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32] | None = None,
    *,
    isa: str | None = None,
) -> npt.NDArray[np.float32]: ...  # exact (erf) GELU, within 4e-7 of x Phi(x); -inf -> 0
def softmax(
    x: npt.NDArray[np.float32],
    scale: float = 1.0,
    out: npt.NDArray[np.float32] | None = None,
    *,
    isa: str | None = None,
) -> npt.NDArray[np.float32]: ...  # softmax(x * scale) over the last dim; all -inf row -> NaN
def layer_norm(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32] | None = None,
    bias: npt.NDArray[np.float32] | None = None,
    eps: float = 1e-5,
    out: npt.NDArray[np.float32] | None = None,
    *,
    isa: str | None = None,
) -> npt.NDArray[np.float32]: ...  # over x's trailing dims of weight's (else bias's, else the
# last dim's) shape: (x - mean) / sqrt(biased var + eps) * weight + bias
def measure_peak_gflops(isa: str | None = None, min_time: float = 0.05) -> float: ...
