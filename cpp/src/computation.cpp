// Computation factories, validation, naming and the header round trip.
#include "looptune/computation.h"

#include <algorithm>
#include <set>
#include <sstream>
#include <stdexcept>

namespace looptune {

int64_t TensorAccess::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorAccess::alloc_numel() const {
  int64_t n = 1;
  for (int64_t d : alloc_shape) n *= d;
  return n;
}

bool TensorAccess::padded() const {
  if (!byte_map.empty()) return !byte_identity;
  return alloc_shape != shape;
}

int64_t Computation::flops() const {
  int64_t n = 2;
  for (const Var& v : vars) n *= v.extent;
  if (group_var >= 0)  // int8: the user's reduction values, not the groups of 4
    n = n / vars[group_var].extent * group_extent;
  const Blocking& b = in1.blocking;
  if (b.active()) n = n / ((b.size + b.factor - 1) / b.factor * b.factor) * b.size;
  return n;
}

int Computation::var_index(const std::string& name) const {
  for (size_t i = 0; i < vars.size(); ++i)
    if (vars[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

int64_t extent_of(const Computation& c, const std::string& name) {
  int i = c.var_index(name);
  return i < 0 ? 0 : c.vars[i].extent;
}

void check_size(const std::string& what, int64_t v) {
  if (v < 1 || v > kMaxExtent)
    bad(what + " must be in 1.." + std::to_string(kMaxExtent) + ", got " + std::to_string(v));
}

// Product of dims, failing as soon as it exceeds `limit` (so it never overflows).
void check_product(const std::string& what, const std::vector<int64_t>& dims, int64_t limit) {
  int64_t n = 1;
  for (int64_t d : dims) {
    n *= d;
    if (n > limit)
      bad(what + " is too large: more than " + std::to_string(limit) + " elements");
  }
}

void check_tensors(const Computation& c) {
  for (const TensorAccess* t : {&c.in0, &c.in1, &c.out})
    check_product("tensor " + t->name, t->alloc_shape, kMaxTensorElements);
  std::vector<int64_t> ext;
  for (const Var& v : c.vars) ext.push_back(v.extent);
  check_product("iteration space", ext, kMaxIterations);
}

// A dense row-major tensor whose dims are indexed by the variables `dims` (repeats allowed).
TensorAccess dense(const std::string& name, const std::vector<std::string>& dims,
                   const Computation& c) {
  TensorAccess t;
  t.name = name;
  for (const std::string& v : dims) t.shape.push_back(extent_of(c, v));
  t.alloc_shape = t.shape;
  t.pad.assign(t.shape.size(), 0);
  t.strides.assign(c.vars.size(), 0);
  int64_t stride = 1;
  for (size_t d = dims.size(); d-- > 0;) {
    t.strides[c.var_index(dims[d])] += stride;
    stride *= t.shape[d];
  }
  return t;
}

// Rows of a dense input that a reduction walks down (B[k, n] of a matmul: k steps a whole row)
// are re-read as a column panel, one cache line per row. When a row is a multiple of 512 bytes,
// 8 or more of those lines share each L1 set (64 sets of 64 B lines; and likewise in L2), so a
// panel of a few hundred rows cannot stay in cache however the loops are blocked: 512^3 reached
// ~92 GFLOP/s on AVX2 against ~99 with rows of 528 floats. Such an input, when it is larger than
// 256 KiB and reused at least 64 times (so the copy costs under ~2% of the work), gets rows one
// cache line longer in the kernel's buffer; the executor copies it there on every call.
constexpr int64_t kAliasRowBytes = 512, kRelayoutMinBytes = 256 << 10, kRelayoutMinReuse = 64;
constexpr int64_t kLineFloats = 16;

void pad_rows_against_aliasing(TensorAccess& t, const Computation& c) {
  const size_t nd = t.shape.size();
  if (nd < 2 || t.padded()) return;
  const int64_t row = t.shape[nd - 1];
  if ((row * 4) % kAliasRowBytes != 0 || t.numel() * 4 <= kRelayoutMinBytes) return;
  bool walks_rows = false;
  int64_t reuse = 1;
  for (size_t v = 0; v < c.vars.size(); ++v) {
    if (c.vars[v].reduction && t.strides[v] == row) walks_rows = true;
    if (t.strides[v] == 0) reuse = std::min<int64_t>(reuse * c.vars[v].extent, kMaxExtent);
  }
  if (!walks_rows || reuse < kRelayoutMinReuse) return;
  const int64_t longer = row + kLineFloats;
  // A dense stride is (elements of whole rows) + (0 or 1 in the row, for a repeated letter).
  for (int64_t& s : t.strides) s = s / row * longer + s % row;
  t.alloc_shape[nd - 1] = longer;
}

// One variable per letter of an einsum operand.
std::vector<std::string> letter_vars(const std::string& letters) {
  std::vector<std::string> out;
  for (char ch : letters) out.emplace_back(1, ch);
  return out;
}

struct SplitSpec {
  std::string a, b, out;
};

SplitSpec split_spec(const std::string& spec) {
  size_t arrow = spec.find("->");
  size_t comma = spec.find(',');
  if (arrow == std::string::npos || comma == std::string::npos || comma > arrow)
    bad("contraction spec must look like 'mk,kn->mn', got '" + spec + "'");
  SplitSpec s{spec.substr(0, comma), spec.substr(comma + 1, arrow - comma - 1),
              spec.substr(arrow + 2)};
  if (s.b.find(',') != std::string::npos)
    bad("contraction spec needs exactly two inputs, got '" + spec + "'");
  for (const std::string* part : {&s.a, &s.b, &s.out}) {
    if (part->empty()) bad("contraction spec has an empty operand: '" + spec + "'");
    for (char ch : *part)
      if (ch < 'a' || ch > 'z')
        bad("contraction spec may only use letters a-z, got '" + std::string(1, ch) + "' in '" +
            spec + "'");
  }
  return s;
}

std::vector<std::string> spec_letters(const std::string& spec) {
  std::vector<std::string> parts;
  std::string cur;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == ',' || spec[i] == '-') {
      parts.push_back(cur);
      cur.clear();
      if (spec[i] == '-') ++i;  // skip '>'
    } else {
      cur += spec[i];
    }
  }
  parts.push_back(cur);
  return parts;
}

}  // namespace

std::string Computation::name() const {
  std::ostringstream os;
  if (kind == "matmul") {
    os << "mm" << in0.shape[0] << '_' << in0.shape[1] << '_' << in1.shape[1];
  } else if (kind == "batch_matmul") {
    os << "bmm" << in0.shape[0] << '_' << in0.shape[1] << '_' << in0.shape[2] << '_'
       << out.shape[2];
  } else if (kind == "conv2d") {
    os << "conv" << in0.shape[0] << '_' << in0.shape[1] << '_' << in0.shape[2] << '_'
       << in0.shape[3] << '_' << in1.shape[0] << '_' << in1.shape[2] << '_' << in1.shape[3]
       << "_s" << conv_stride << "_p" << conv_pad;
    if (groups > 1) os << "_g" << groups;
  } else {
    os << "ein";
    for (const std::string& p : spec_letters(spec)) os << '_' << p;
    for (const Var& v : vars) os << '_' << v.name << v.extent;
  }
  if (block > 0) os << "_b" << block;
  if (is_int8()) os << "_i8";
  if (!epilogue.empty()) {
    std::string e = epilogue.str();
    std::replace(e.begin(), e.end(), '+', '_');
    os << '_' << e;
  }
  return os.str();
}

namespace {
std::string base_header(const Computation& c);
}  // namespace

std::string Computation::header() const {
  std::string h = base_header(*this);
  if (is_int8()) h += " dtype=int8";
  if (!epilogue.empty()) h += " epilogue=" + epilogue.str();
  return h;
}

int Computation::bias_dim() const {
  return kind == "conv2d" ? 1 : static_cast<int>(out.shape.size()) - 1;
}

std::vector<int64_t> Computation::bias_shape() const { return {out.shape[bias_dim()]}; }

std::string Epilogue::str() const {
  std::string s;
  auto term = [&](const std::string& t) { s += (s.empty() ? "" : "+") + t; };
  if (scale) term("scale");
  if (bias) term("bias");
  if (add) term("add");
  if (!act.empty()) term(act);
  if (requant) term("requant");
  return s;
}

Epilogue parse_epilogue(const std::string& spec) {
  Epilogue e;
  if (spec.empty()) return e;
  const std::string allowed =
      "an epilogue is terms joined by '+' in this order: 'scale' (int8 computations, which "
      "need it), optional 'bias', optional 'add', optional activation 'relu' | 'relu6' | "
      "'gelu', then (int8 only) optional 'requant' (a uint8 output) (e.g. 'bias+relu', "
      "'bias+add+relu', 'scale+bias+relu', 'scale+bias+relu+requant')";
  int stage = 0;  // 0: nothing yet, 1: bias, 2: add, 3: the activation, 4: requant
  size_t start = 0;
  while (true) {
    const size_t plus = spec.find('+', start);
    const std::string t = spec.substr(start, plus == std::string::npos ? std::string::npos
                                                                      : plus - start);
    int at;
    if (t == "scale") at = 0;
    else if (t == "bias") at = 1;
    else if (t == "add") at = 2;
    else if (t == "relu" || t == "relu6" || t == "gelu") at = 3;
    else if (t == "requant") at = 4;
    else bad("bad epilogue term '" + t + "' in '" + spec + "': " + allowed);
    if ((at == 0 && stage != 0) || (at > 0 && at <= stage))
      bad("epilogue term '" + t + "' out of order or repeated in '" + spec + "': " + allowed);
    stage = at == 0 ? 0 : at;
    if (at == 0 && e.scale) bad("epilogue term 'scale' repeated in '" + spec + "': " + allowed);
    if (at == 0) e.scale = true;
    else if (at == 1) e.bias = true;
    else if (at == 2) e.add = true;
    else if (at == 4) e.requant = true;
    else e.act = t;
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  return e;
}

Computation with_epilogue(Computation c, const std::string& spec) {
  c.epilogue = parse_epilogue(spec);
  check_epilogue_dtype(c);
  return c;
}

void check_epilogue_dtype(const Computation& c) {
  if (c.is_int8() && !c.epilogue.empty() && !c.epilogue.scale)
    bad("an int8 computation's epilogue starts with 'scale' (out = act(float(acc) * "
        "scale[channel] + bias ...)), got '" + c.epilogue.str() + "'");
  if (!c.is_int8() && c.epilogue.scale)
    bad("'scale' is an int8 epilogue term; this computation is float32");
  if (!c.is_int8() && c.epilogue.requant)
    bad("'requant' is an int8 epilogue term; this computation is float32");
}

namespace {

std::string base_header(const Computation& c) {
  const std::string& kind = c.kind;
  const auto& in0 = c.in0;
  const auto& in1 = c.in1;
  const auto& vars = c.vars;
  const auto& spec = c.spec;
  const int64_t block = c.block;
  std::ostringstream os;
  os << kind;
  if (kind == "conv2d") {
    os << " n=" << in0.shape[0] << " c=" << in0.shape[1] << " h=" << in0.shape[2]
       << " w=" << in0.shape[3] << " k=" << in1.shape[0] << " r=" << in1.shape[2]
       << " s=" << in1.shape[3] << " stride=" << c.conv_stride << " pad=" << c.conv_pad;
    if (c.groups > 1) os << " groups=" << c.groups;
    if (block > 0) os << " block=" << block;
    return os.str();
  }
  if (kind == "contraction") {
    os << ' ' << spec;
    std::map<std::string, int64_t> sorted;
    for (const Var& v : vars) sorted[v.name] = v.extent;
    for (const auto& [k, v] : sorted) os << ' ' << k << '=' << v;
    return os.str();
  }
  if (c.is_int8() && kind == "batch_matmul") {
    os << " b=" << in0.shape[0] << " m=" << in0.shape[1] << " k=" << in0.shape[2]
       << " n=" << c.out.shape[2];
    return os.str();
  }
  if (kind == "matmul" && (block > 0 || c.is_int8())) {
    os << " m=" << in0.shape[0] << " k=" << in0.shape[1] << " n=" << in1.shape[1];
    if (block > 0) os << " block=" << block;
    return os.str();
  }
  for (const Var& v : vars) os << ' ' << v.name << '=' << v.extent;
  return os.str();
}

}  // namespace

Computation contraction(const std::string& spec, const std::map<std::string, int64_t>& sizes) {
  SplitSpec s = split_spec(spec);
  std::set<char> in_letters(s.a.begin(), s.a.end());
  in_letters.insert(s.b.begin(), s.b.end());
  std::set<char> out_letters;
  for (char ch : s.out) {
    if (!out_letters.insert(ch).second)
      bad("contraction output may not repeat a letter: '" + std::string(1, ch) + "' in '" +
          spec + "'");
    if (!in_letters.count(ch))
      bad("output letter '" + std::string(1, ch) + "' appears in no input of '" + spec + "'");
  }
  std::string order = s.out.substr(0, s.out.size() - 1);
  for (char ch : s.a + s.b)
    if (!out_letters.count(ch) && order.find(ch) == std::string::npos) order += ch;
  order += s.out.back();
  if (order.size() > static_cast<size_t>(kMaxVars))
    bad("contraction has " + std::to_string(order.size()) + " variables; at most " +
        std::to_string(kMaxVars) + " are supported");
  for (const auto& [name, v] : sizes)
    if (name.size() != 1 || order.find(name[0]) == std::string::npos)
      bad("size given for '" + name + "', which is not a letter of '" + spec + "'");
  Computation c;
  c.kind = "contraction";
  c.spec = spec;
  for (char ch : order) {
    std::string name(1, ch);
    auto it = sizes.find(name);
    if (it == sizes.end()) bad("no size given for letter '" + name + "' of '" + spec + "'");
    check_size("size of '" + name + "'", it->second);
    c.vars.push_back(Var{name, it->second, out_letters.count(ch) == 0});
  }
  c.in0 = dense("A", letter_vars(s.a), c);
  c.in1 = dense("B", letter_vars(s.b), c);
  c.out = dense("C", letter_vars(s.out), c);
  check_tensors(c);
  pad_rows_against_aliasing(c.in0, c);
  pad_rows_against_aliasing(c.in1, c);
  check_tensors(c);
  return c;
}

Computation matmul(int64_t m, int64_t k, int64_t n) {
  check_size("m", m);
  check_size("k", k);
  check_size("n", n);
  Computation c = contraction("mk,kn->mn", {{"m", m}, {"k", k}, {"n", n}});
  c.kind = "matmul";
  return c;
}

Computation batch_matmul(int64_t b, int64_t m, int64_t k, int64_t n) {
  check_size("b", b);
  check_size("m", m);
  check_size("k", k);
  check_size("n", n);
  Computation c = contraction("bmk,bkn->bmn", {{"b", b}, {"m", m}, {"k", k}, {"n", n}});
  c.kind = "batch_matmul";
  return c;
}

namespace {

constexpr int64_t kMaxBlock = 64;

void check_block(int64_t block) {
  if (block < 1 || block > kMaxBlock)
    bad("block must be in 1.." + std::to_string(kMaxBlock) + ", got " + std::to_string(block));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Strides of a tensor given as (variable, stride) pairs; the other variables get 0.
std::vector<int64_t> strides_of(const Computation& c,
                                const std::vector<std::pair<std::string, int64_t>>& s) {
  std::vector<int64_t> out(c.vars.size(), 0);
  for (const auto& [name, v] : s) out[c.var_index(name)] = v;
  return out;
}

// Shared by conv2d (block 0: the user's layouts) and conv2d_blocked. groups > 1: grouped
// convolution, with a variable g (the group) and k, c (ko with a block) counting output and
// input channels within a group.
Computation make_conv2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                        int64_t s, int64_t stride, int64_t pad, int64_t block, int64_t groups) {
  for (auto [name, v] : {std::pair<const char*, int64_t>{"n", n}, {"c", c}, {"h", h}, {"w", w},
                         {"k", k}, {"r", r}, {"s", s}, {"stride", stride}, {"groups", groups}})
    check_size(name, v);
  if (pad < 0 || pad > kMaxExtent)
    bad("pad must be in 0.." + std::to_string(kMaxExtent) + ", got " + std::to_string(pad));
  if (c % groups != 0 || k % groups != 0)
    bad("groups (" + std::to_string(groups) + ") must divide the input channels c (" +
        std::to_string(c) + ") and the output channels k (" + std::to_string(k) + ")");
  const int64_t cg = c / groups, kg = k / groups;
  const bool depthwise = groups > 1 && groups == c && groups == k;
  if (groups > 1 && block > 0 && kg % block != 0 && !depthwise)
    bad("a blocked grouped conv2d needs the block (" + std::to_string(block) +
        ") to divide the output channels per group (" + std::to_string(kg) +
        "), unless it is depthwise (groups == c == k)");
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  if (r > hp || s > wp)
    bad("conv2d filter " + std::to_string(r) + "x" + std::to_string(s) +
        " is larger than the padded input " + std::to_string(hp) + "x" + std::to_string(wp));
  const int64_t oh = (hp - r) / stride + 1, ow = (wp - s) / stride + 1;
  check_size("padded height", hp);
  check_size("padded width", wp);
  Computation cp;
  cp.kind = "conv2d";
  cp.spec = "nchw,kcrs->nkhw";
  cp.conv_stride = stride;
  cp.conv_pad = pad;
  cp.block = block;
  cp.groups = groups;
  TensorAccess& in = cp.in0;
  in.name = "I";
  in.shape = {n, c, h, w};
  in.alloc_shape = {n, c, hp, wp};
  in.pad = {0, 0, pad, pad};
  const bool grouped = groups > 1;
  if (block == 0 && !grouped) {
    cp.vars = {{"n", n, false}, {"k", k, false}, {"oh", oh, false}, {"c", c, true},
               {"r", r, true},  {"s", s, true},  {"ow", ow, false}};
    in.strides = {c * hp * wp, 0, stride * wp, hp * wp, wp, 1, stride};  // in the order of vars
    cp.in1 = dense("W", {"k", "c", "r", "s"}, cp);
    cp.out = dense("O", {"n", "k", "oh", "ow"}, cp);
    check_tensors(cp);
    return cp;
  }
  if (block == 0) {
    cp.vars = {{"n", n, false}, {"g", groups, false}, {"k", kg, false}, {"oh", oh, false},
               {"c", cg, true}, {"r", r, true},       {"s", s, true},   {"ow", ow, false}};
    in.strides = strides_of(cp, {{"n", c * hp * wp}, {"g", cg * hp * wp}, {"oh", stride * wp},
                                 {"c", hp * wp}, {"r", wp}, {"s", 1}, {"ow", stride}});
    TensorAccess& wt = cp.in1;
    wt.name = "W";
    wt.shape = wt.alloc_shape = {k, cg, r, s};
    wt.pad.assign(4, 0);
    wt.strides = strides_of(cp, {{"g", kg * cg * r * s}, {"k", cg * r * s}, {"c", r * s},
                                 {"r", s}, {"s", 1}});
    TensorAccess& o = cp.out;
    o.name = "O";
    o.shape = o.alloc_shape = {n, k, oh, ow};
    o.pad.assign(4, 0);
    o.strides = strides_of(cp, {{"n", k * oh * ow}, {"g", kg * oh * ow}, {"k", oh * ow},
                                {"oh", ow}, {"ow", 1}});
    check_tensors(cp);
    return cp;
  }
  if (grouped && groups == c && groups == k) {
    // Depthwise with blocked channels: the input, weights and output all hold blocks of L
    // channels innermost (input [N][C/L][H+2p][W+2p][L], weights [C/L][R][S][L], output
    // [N][C/L][OH][OW][L]), so the channel block is the vector loop of every tensor (stride
    // 1), whatever the conv stride. Variables as a blocked conv's (c has extent 1).
    const int64_t cb = ceil_div(c, block), L = block;
    cp.vars = {{"n", n, false}, {"ko", cb, false}, {"oh", oh, false}, {"c", 1, true},
               {"r", r, true},  {"s", s, true},    {"ow", ow, false}, {"ki", L, false}};
    in.alloc_shape = {n, cb, hp, wp, L};
    in.strides = strides_of(cp, {{"n", cb * hp * wp * L}, {"ko", hp * wp * L},
                                 {"oh", stride * wp * L}, {"r", wp * L}, {"s", L},
                                 {"ow", stride * L}, {"ki", 1}});
    in.blocking = {1, c, L, 1};
    TensorAccess& wt = cp.in1;
    wt.name = "W";
    wt.shape = {k, 1, r, s};
    wt.alloc_shape = {cb, 1, r, s, L};
    wt.pad.assign(4, 0);
    wt.strides = strides_of(cp, {{"ko", r * s * L}, {"r", s * L}, {"s", L}, {"ki", 1}});
    wt.blocking = {0, k, L, 0};
    TensorAccess& o = cp.out;
    o.name = "O";
    o.shape = {n, k, oh, ow};
    o.alloc_shape = {n, cb, oh, ow, L};
    o.pad.assign(4, 0);
    o.strides = strides_of(cp, {{"n", cb * oh * ow * L}, {"ko", oh * ow * L}, {"oh", ow * L},
                                {"ow", L}, {"ki", 1}});
    o.blocking = {1, k, L, 1};
    check_tensors(cp);
    return cp;
  }
  const int64_t ko = ceil_div(k, block), L = block, kog = grouped ? kg / L : ko;
  if (grouped)
    cp.vars = {{"n", n, false}, {"g", groups, false}, {"ko", kog, false}, {"oh", oh, false},
               {"c", cg, true},  {"r", r, true},  {"s", s, true},   {"ow", ow, false},
               {"ki", L, false}};
  else
    cp.vars = {{"n", n, false}, {"ko", ko, false}, {"oh", oh, false}, {"c", c, true},
               {"r", r, true},  {"s", s, true},   {"ow", ow, false}, {"ki", L, false}};
  std::vector<std::pair<std::string, int64_t>> ins = {
      {"n", c * hp * wp}, {"oh", stride * wp}, {"c", hp * wp}, {"r", wp}, {"s", 1},
      {"ow", stride}};
  std::vector<std::pair<std::string, int64_t>> ws = {
      {"ko", cg * r * s * L}, {"c", r * s * L}, {"r", s * L}, {"s", L}, {"ki", 1}};
  std::vector<std::pair<std::string, int64_t>> os = {
      {"n", ko * oh * ow * L}, {"ko", oh * ow * L}, {"oh", ow * L}, {"ow", L}, {"ki", 1}};
  if (grouped) {
    ins.push_back({"g", cg * hp * wp});
    ws.push_back({"g", kog * cg * r * s * L});
    os.push_back({"g", kog * oh * ow * L});
  }
  in.strides = strides_of(cp, ins);
  TensorAccess& wt = cp.in1;
  wt.name = "W";
  wt.shape = {k, cg, r, s};
  wt.alloc_shape = {ko, cg, r, s, L};
  wt.pad.assign(4, 0);
  wt.strides = strides_of(cp, ws);
  wt.blocking = {0, k, L, 0};
  TensorAccess& o = cp.out;
  o.name = "O";
  o.shape = {n, k, oh, ow};
  o.alloc_shape = {n, ko, oh, ow, L};
  o.pad.assign(4, 0);
  o.strides = strides_of(cp, os);
  o.blocking = {1, k, L, 1};
  check_tensors(cp);
  return cp;
}

}  // namespace

Computation conv2d(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s,
                   int64_t stride, int64_t pad, int64_t groups) {
  return make_conv2d(n, c, h, w, k, r, s, stride, pad, 0, groups);
}

Computation conv2d_blocked(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                           int64_t s, int64_t stride, int64_t pad, int64_t block,
                           int64_t groups) {
  check_block(block);
  return make_conv2d(n, c, h, w, k, r, s, stride, pad, block, groups);
}

Computation matmul_packed(int64_t m, int64_t k, int64_t n, int64_t block) {
  check_size("m", m);
  check_size("k", k);
  check_size("n", n);
  check_block(block);
  const int64_t no = ceil_div(n, block), L = block;
  Computation c;
  c.kind = "matmul";
  c.spec = "mk,kn->mn";
  c.block = block;
  c.vars = {{"m", m, false}, {"no", no, false}, {"k", k, true}, {"ni", L, false}};
  TensorAccess& a = c.in0;
  a.name = "A";
  a.shape = a.alloc_shape = {m, k};
  a.pad = {0, 0};
  a.strides = strides_of(c, {{"m", k}, {"k", 1}});
  TensorAccess& b = c.in1;
  b.name = "B";
  b.shape = {k, n};
  b.alloc_shape = {no, k, L};
  b.pad = {0, 0};
  b.strides = strides_of(c, {{"no", k * L}, {"k", L}, {"ni", 1}});
  b.blocking = {1, n, L, 0};
  TensorAccess& o = c.out;
  o.name = "C";
  o.shape = {m, n};
  o.alloc_shape = {m, no * L};  // the user's layout when L divides n (then no copy is made)
  o.pad = {0, 0};
  o.strides = strides_of(c, {{"m", no * L}, {"no", L}, {"ni", 1}});
  o.blocking = {1, n, L, 1};
  check_tensors(c);
  return c;
}

int64_t default_conv2d_block(int64_t k, int lanes) { return k >= lanes ? lanes : 0; }

int64_t default_matmul_block(int64_t m, int64_t k, int64_t n, int lanes, int64_t l2_bytes) {
  // Narrow n: vectors along n would leave lanes idle; B transposed ([N][K], blocks of 1)
  // makes both inputs contiguous in k, so the kernel vectorizes the reduction instead.
  if (lanes > 0 && n > 1 && n < 2 * lanes && n % lanes != 0 && k >= lanes) return 1;
  const int64_t l2 = l2_bytes > 0 ? l2_bytes : int64_t(2) << 20;  // CPUID may not say
  const bool large_b = k * n * 4 > 2 * l2;
  return large_b && m >= 256 && n >= lanes ? lanes : 0;
}

namespace {

int64_t parse_int(const std::string& key, const std::string& text) {
  if (text.empty() || text.size() > 18 ||
      !std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    bad("bad value for '" + key + "': '" + text + "' is not a non-negative integer");
  return std::stoll(text);
}

// The remaining "key=value" tokens of a header, each key at most once.
std::map<std::string, int64_t> parse_kv(std::istringstream& is, const std::string& header) {
  std::map<std::string, int64_t> kv;
  std::string tok;
  while (is >> tok) {
    size_t eq = tok.find('=');
    if (eq == std::string::npos || eq == 0)
      bad("bad token '" + tok + "' in computation header '" + header + "'");
    std::string key = tok.substr(0, eq);
    if (!kv.emplace(key, parse_int(key, tok.substr(eq + 1))).second)
      bad("'" + key + "' given twice in computation header '" + header + "'");
  }
  return kv;
}

int64_t take(std::map<std::string, int64_t>& kv, const std::string& key, const std::string& h) {
  auto it = kv.find(key);
  if (it == kv.end()) bad("computation header '" + h + "' lacks '" + key + "='");
  int64_t v = it->second;
  kv.erase(it);
  return v;
}

}  // namespace

namespace {
Computation parse_base(const std::string& text, const std::string& header);
}  // namespace

Computation parse_computation(const std::string& header) {
  // The epilogue (the one key with a text value) is taken out first; the rest is key=integer.
  std::string rest, epi, tok, dtype;
  bool has_epi = false;
  {
    std::istringstream toks(header);
    while (toks >> tok) {
      if (tok.rfind("epilogue=", 0) == 0) {
        if (has_epi) bad("'epilogue' given twice in computation header '" + header + "'");
        has_epi = true;
        epi = tok.substr(9);
      } else if (tok.rfind("dtype=", 0) == 0) {
        if (!dtype.empty()) bad("'dtype' given twice in computation header '" + header + "'");
        dtype = tok.substr(6);
        if (dtype != "int8" && dtype != "float32")
          bad("bad dtype '" + dtype + "' in computation header '" + header +
              "': 'float32' or 'int8'");
      } else {
        rest += tok + ' ';
      }
    }
  }
  Computation c = parse_base(rest, header);
  if (dtype == "int8") c = int8_of(c);
  if (has_epi) {
    if (epi.empty()) bad("empty 'epilogue=' in computation header '" + header + "'");
    c.epilogue = parse_epilogue(epi);
    check_epilogue_dtype(c);
  }
  return c;
}

namespace {

Computation parse_base(const std::string& text, const std::string& header) {
  std::istringstream is(text);
  std::string kind;
  if (!(is >> kind)) bad("empty computation header");
  std::string spec;
  if (kind == "contraction" && !(is >> spec)) bad("contraction header lacks a spec");
  auto kv = parse_kv(is, header);
  if (kind == "contraction") return contraction(spec, kv);
  Computation c;
  if (kind == "matmul") {
    int64_t m = take(kv, "m", header), k = take(kv, "k", header), n = take(kv, "n", header);
    if (kv.count("block") && kv.size() == 1)
      return matmul_packed(m, k, n, take(kv, "block", header));
    if (kv.empty()) return matmul(m, k, n);
  } else if (kind == "batch_matmul") {
    int64_t b = take(kv, "b", header), m = take(kv, "m", header), k = take(kv, "k", header),
            n = take(kv, "n", header);
    if (kv.empty()) return batch_matmul(b, m, k, n);
  } else if (kind == "conv2d") {
    int64_t v[9];
    const char* keys[9] = {"n", "c", "h", "w", "k", "r", "s", "stride", "pad"};
    for (int i = 0; i < 9; ++i) v[i] = take(kv, keys[i], header);
    const int64_t groups = kv.count("groups") ? take(kv, "groups", header) : 1;
    if (kv.count("block") && kv.size() == 1)
      return conv2d_blocked(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
                            take(kv, "block", header), groups);
    if (kv.empty()) return conv2d(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], groups);
  } else {
    bad("unknown computation kind '" + kind + "' in header '" + header + "'");
  }
  bad("unexpected key '" + kv.begin()->first + "' in computation header '" + header + "'");
}

}  // namespace

namespace {

// Word offsets in the kernel buffer of each index along each user dim of a (word-level)
// tensor access: its conv padding, longer rows or blocking (see Blocking).
std::vector<std::vector<int64_t>> word_tables(const TensorAccess& t) {
  const int nd = static_cast<int>(t.shape.size());
  std::vector<std::vector<int64_t>> tab(nd);
  const Blocking& b = t.blocking;
  if (!b.active()) {
    std::vector<int64_t> st(nd, 1);
    for (int d = nd - 1; d-- > 0;) st[d] = st[d + 1] * t.alloc_shape[d + 1];
    for (int d = 0; d < nd; ++d)
      for (int64_t i = 0; i < t.shape[d]; ++i) tab[d].push_back((i + t.pad[d]) * st[d]);
    return tab;
  }
  // kernel [A][blocks][B][L] or [blocks][A][B][L]; B's dims may carry conv padding
  int64_t A = 1, B = 1;
  for (int d = 0; d < nd; ++d) {
    if (d < b.dim) A *= t.shape[d];
    if (d > b.dim) B *= t.shape[d] + 2 * t.pad[d];
  }
  const int64_t L = b.factor, blocks = (b.size + L - 1) / L;
  const int64_t a_unit = b.outer_pos == 0 ? B * L : blocks * B * L;
  const int64_t block_unit = b.outer_pos == 0 ? A * B * L : B * L;
  for (int d = 0; d < nd; ++d) {
    int64_t inner = 1;
    if (d < b.dim)
      for (int e = d + 1; e < b.dim; ++e) inner *= t.shape[e];
    if (d > b.dim)
      for (int e = d + 1; e < nd; ++e) inner *= t.shape[e] + 2 * t.pad[e];
    for (int64_t i = 0; i < t.shape[d]; ++i) {
      if (d < b.dim) tab[d].push_back(i * inner * a_unit);
      else if (d == b.dim) tab[d].push_back(i / L * block_unit + i % L);
      else tab[d].push_back((i + t.pad[d]) * inner * L);
    }
  }
  return tab;
}

// Turns the word-level access `w` (built with the grouped dim `gd` holding `groups` groups of
// ceil(cg/4) words) into the int8 access of the user's byte tensor of `shape`.
void group_bytes(TensorAccess& w, const std::vector<int64_t>& shape, int gd, int64_t cg) {
  const auto tab = word_tables(w);
  const int nd = static_cast<int>(shape.size());
  const int64_t cg4 = (cg + 3) / 4;
  w.byte_map.assign(nd, {});
  for (int d = 0; d < nd; ++d) {
    auto& m = w.byte_map[d];
    m.resize(shape[d]);
    for (int64_t i = 0; i < shape[d]; ++i) {
      if (d != gd) { m[i] = tab[d][i] * 4; continue; }
      const int64_t g = i / cg, c = i % cg;
      m[i] = tab[d][g * cg4 + c / 4] * 4 + c % 4;
    }
  }
  w.shape = shape;
  int64_t n = 1;
  bool identity = true;
  for (int d = nd; d-- > 0;) {
    for (int64_t i = 0; i < shape[d] && identity; ++i) identity = w.byte_map[d][i] == i * n;
    n *= shape[d];
  }
  w.byte_identity = identity && w.alloc_numel() * 4 == n;
}

}  // namespace

Computation int8_of(const Computation& f) {
  if (f.is_int8()) return f;
  if (!f.epilogue.empty()) bad("int8_of takes a computation without an epilogue");
  auto check_products = [](int64_t n) {
    if (n > kMaxInt8Products)
      bad("an int8 output element would sum " + std::to_string(n) + " products; at most " +
          std::to_string(kMaxInt8Products) + " keep the int32 sum exact");
  };
  auto q = [](int64_t x) { return (x + 3) / 4; };
  Computation w;
  int gd0 = 0, gd1 = 0;
  int64_t cg = 0;
  if (f.kind == "matmul") {
    const int64_t m = f.in0.shape[0], k = f.in0.shape[1], n = f.in1.shape[1];
    check_products(k);
    w = f.block ? matmul_packed(m, q(k), n, f.block) : matmul(m, q(k), n);
    gd0 = 1, gd1 = 0, cg = k;
  } else if (f.kind == "batch_matmul") {
    const int64_t b = f.in0.shape[0], m = f.in0.shape[1], k = f.in0.shape[2],
                  n = f.in1.shape[2];
    check_products(k);
    w = batch_matmul(b, m, q(k), n);
    gd0 = 2, gd1 = 1, cg = k;
  } else if (f.kind == "conv2d") {
    const int64_t n = f.in0.shape[0], c = f.in0.shape[1], h = f.in0.shape[2],
                  wd = f.in0.shape[3], k = f.in1.shape[0], r = f.in1.shape[2],
                  s = f.in1.shape[3], g = f.groups;
    cg = c / g;
    check_products(cg * r * s);
    const int64_t c4 = g * q(cg);
    w = f.block ? conv2d_blocked(n, c4, h, wd, k, r, s, f.conv_stride, f.conv_pad, f.block, g)
                : conv2d(n, c4, h, wd, k, r, s, f.conv_stride, f.conv_pad, g);
    gd0 = 1, gd1 = 1;
  } else {
    bad("int8 supports matmul, batch_matmul and conv2d, not '" + f.kind + "'");
  }
  group_bytes(w.in0, f.in0.shape, gd0, cg);
  group_bytes(w.in1, f.in1.shape, gd1, cg);  // (one group: a weight row holds one group)
  w.dtype = "int8";
  w.group_var = w.var_index(f.kind == "conv2d" ? "c" : "k");
  w.group_extent = cg;
  return w;
}

}  // namespace looptune
