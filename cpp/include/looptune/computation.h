// A tensor computation: out[...] += in0[...] * in1[...] summed over reduction variables.
//
// Every operator (matmul, batched matmul, conv2d, einsum-like contractions) is lowered to
// the same form: a set of named loop variables with extents, and three tensors whose
// element offset is a linear function of the variables (a stride per variable, in elements).
// Convolution padding is handled by the executor (the first input is copied into a padded
// buffer), so the kernel itself only ever sees dense, in-bounds linear accesses. The executor
// also re-lays out a large, heavily reused input whose rows map to few cache sets (e.g. B of a
// 512^3 matmul: rows of 2 KiB) into a buffer with rows one cache line longer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace looptune {

struct Var {
  std::string name;
  int64_t extent = 0;
  bool reduction = false;  // does not index the output
};

// A kernel layout that blocks one user dimension `dim` (of `size` elements) by `factor`: the
// dimension becomes an outer dimension of ceil(size/factor) blocks, placed at position
// `outer_pos` of the user's dimensions (0: column panels; dim: blocked in place), and an inner
// dimension of `factor` elements appended last. The tail block is zero-padded. Viewing the
// user's tensor as [A][size][B] (A, B: products of the dims before and after `dim`), the kernel
// buffer is [A][blocks][B][factor] (outer_pos == dim) or [blocks][A][B][factor] (outer_pos == 0).
struct Blocking {
  int dim = -1;
  int64_t size = 0, factor = 0;
  int outer_pos = 0;
  bool active() const { return factor > 0; }
};

struct TensorAccess {
  std::string name;
  std::vector<int64_t> shape;        // user-facing (unpadded) shape, row-major
  // Shape of the buffer the kernel reads: shape + 2*pad (conv padding), and for an input whose
  // rows would alias in the cache, longer rows (see pad_rows_against_aliasing).
  std::vector<int64_t> alloc_shape;
  std::vector<int64_t> pad;          // leading padding per dim; all 0 if none
  std::vector<int64_t> strides;      // per computation variable, in elements of alloc_shape
  Blocking blocking;                 // kernel layout blocks a dimension (no conv padding then)
  // int8 computations (inputs only): the user's tensor holds bytes (shape in bytes) and the
  // kernel's buffer 32-bit words of 4 consecutive reduction values (alloc_shape and strides in
  // words). byte_map[d][i]: byte offset in the kernel buffer of index i along user dim d (an
  // element's offset is the sum over its dims); padding bytes are zero. Empty otherwise.
  std::vector<std::vector<int64_t>> byte_map;
  bool byte_identity = false;        // byte_map is the user's dense layout (no copy needed)
  int64_t numel() const;             // elements of the user-facing shape
  int64_t alloc_numel() const;       // elements of the kernel buffer
  bool padded() const;               // the kernel buffer differs from the user's (a copy is made)
  int64_t elem_bytes() const { return byte_map.empty() ? 4 : 1; }  // bytes per user element
};

// A pointwise epilogue applied to every output element after the reduction:
// out = act(acc + bias[channel] + residual), the terms in this order. `channel` is the output's
// channel dimension (K of conv2d; the last user-facing output dim otherwise); the residual has
// the output's user-facing shape. act: "" (none), "relu", "relu6" or "gelu" (exact, erf form).
// int8 computations: the epilogue starts with 'scale' (out = act(float(acc) * scale[channel] +
// bias[channel] + residual), a float32 output) and float32 ones never have it. An int8
// epilogue may end with 'requant': the output is then uint8, quantize_u8(y, out_scale,
// out_zero_point) of the float32 result y of the rest (quantize.h; the parameters per call or
// fixed on the kernel).
struct Epilogue {
  bool scale = false, bias = false, add = false, requant = false;
  std::string act;
  bool empty() const { return !scale && !bias && !add && act.empty() && !requant; }
  std::string str() const;  // canonical spec, e.g. "bias+add+relu"; "" when empty
  bool operator==(const Epilogue& o) const { return str() == o.str(); }
};

// Parses "bias", "bias+relu", "add+gelu", "" ...; throws std::invalid_argument naming the
// allowed terms for anything else (unknown terms, repeats, the wrong order).
Epilogue parse_epilogue(const std::string& spec);

class Computation {
 public:
  std::string kind;  // "matmul", "batch_matmul", "conv2d", "contraction"
  std::string spec;  // einsum-like spec, e.g. "mk,kn->mn"
  std::vector<Var> vars;
  TensorAccess in0, in1, out;
  // conv2d only (kept so the computation can be printed and re-parsed)
  int64_t conv_stride = 1, conv_pad = 0;
  // Blocked layout (0: the user's layouts). conv2d: output channels blocked by `block`
  // (weights [K/L][C][R][S][L], output [N][K/L][OH][OW][L], variables ko, ki); matmul: B packed
  // in column panels [N/L][K][L] (variables no, ni). Part of name() and header().
  int64_t block = 0;
  int64_t groups = 1;  // conv2d only: grouped convolution (weights [K][C/groups][R][S])
  Epilogue epilogue;   // applied to the output after the reduction (part of the header)
  // "float32", or "int8": u8 activations (in0) times s8 weights (in1) summed in s32 (the
  // output: int32, or float32 through the epilogue). The reduction variable `group_var` (k of
  // a matmul, c of a conv2d) then counts groups of 4 consecutive reduction values (its extent
  // ceil(K/4), per conv group ceil(C/groups/4)), zero-padded in the kernel's buffers; the
  // inputs' kernel layouts are int8_of()'s. Part of name() and header().
  std::string dtype = "float32";
  int group_var = -1;           // int8: the grouped reduction variable
  int64_t group_extent = 0;     // int8: its user extent in values (K, or C/groups)
  bool is_int8() const { return dtype == "int8"; }

  int bias_dim() const;                  // the output dim the bias runs along
  std::vector<int64_t> bias_shape() const;  // {out.shape[bias_dim()]}

  int64_t flops() const;         // 2 * prod(extents), less the zero padding of a blocked dim
  int var_index(const std::string& name) const;  // -1 if absent
  std::string name() const;      // short id, e.g. "mm128_256_64"
  std::string header() const;    // one line that parse_computation() turns back into *this
  bool operator==(const Computation& o) const { return header() == o.header(); }
};

// Limits that keep every buffer addressable and every loop count sane.
constexpr int64_t kMaxExtent = int64_t(1) << 24;
constexpr int64_t kMaxTensorElements = int64_t(1) << 30;  // 4 GiB of float32
constexpr int64_t kMaxIterations = int64_t(1) << 50;      // prod(extents), so flops() fits
constexpr int kMaxVars = 12;                              // variables per computation

// Factories. All throw std::invalid_argument on bad sizes.
Computation matmul(int64_t m, int64_t k, int64_t n);
Computation batch_matmul(int64_t b, int64_t m, int64_t k, int64_t n);
Computation conv2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s,
                   int64_t stride, int64_t pad, int64_t groups = 1);
// Blocked layouts (block >= 1; see Computation::block).
Computation matmul_packed(int64_t m, int64_t k, int64_t n, int64_t block);
Computation conv2d_blocked(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                           int64_t s, int64_t stride, int64_t pad, int64_t block,
                           int64_t groups = 1);
// c with the epilogue `spec` (parse_epilogue; throws std::invalid_argument).
Computation with_epilogue(Computation c, const std::string& spec);
// The default block of an op ("auto" layout), given the vector lanes of the target ISA: conv2d
// blocks output channels by `lanes` when there are at least `lanes` of them (every vector of
// the inner block is full or nearly so); matmul packs B in panels of `lanes` when B is larger
// than twice the L2 (`l2_bytes`; 2 MiB when unknown: it does not stay in L2, and its rows would
// be re-read from memory as strided panels) and is reused by at least 256 rows of A (the copy
// costs under 1% of the work);
// a narrow n (1 < n < 2 lanes, not a multiple of lanes; k >= lanes) transposes B (block 1:
// [N][K]), so both inputs are contiguous in k and the kernel vectorizes the reduction.
// 0 means the user's layouts.
int64_t default_conv2d_block(int64_t k, int lanes);
int64_t default_matmul_block(int64_t m, int64_t k, int64_t n, int lanes, int64_t l2_bytes);
// spec like "mk,kn->mn" (exactly two inputs, one letter per variable), sizes per letter.
Computation contraction(const std::string& spec, const std::map<std::string, int64_t>& sizes);
// Inverse of Computation::header().
Computation parse_computation(const std::string& header);

// The int8 version of a float32 matmul, batch_matmul or conv2d computation (any layout and
// groups; the same sizes and epilogue-free): throws std::invalid_argument for other kinds and
// when one output element would sum more than kMaxInt8Products products (its s32 sum could
// overflow: 255 * 128 * 65793 < 2^31).
Computation int8_of(const Computation& f);
constexpr int64_t kMaxInt8Products = 65793;
// Throws std::invalid_argument unless the epilogue suits the dtype (see Epilogue).
void check_epilogue_dtype(const Computation& c);

}  // namespace looptune
