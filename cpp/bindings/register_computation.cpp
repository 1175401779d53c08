// Python bindings of Computation, its variables and tensors, and the factories.
#include <pybind11/stl.h>

#include <algorithm>
#include <sstream>

#include "looptune/cpu.h"

#include "looptune/loop_tree.h"
#include "register.h"

namespace looptune::bindings {

namespace {

// The Python view of a tensor: strides keyed by variable name.
struct Tensor {
  std::string name;
  py::tuple shape, alloc_shape, pad;
  py::dict strides;
};

py::tuple to_tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = v[i];
  return t;
}

Tensor view(const Computation& c, const TensorAccess& t) {
  Tensor out{t.name, to_tuple(t.shape), to_tuple(t.alloc_shape), to_tuple(t.pad), py::dict()};
  for (size_t v = 0; v < c.vars.size(); ++v) out.strides[py::str(c.vars[v].name)] = t.strides[v];
  return out;
}

// The block of a `layout=` argument: "auto" (the op's default for the host ISA's vector width),
// "plain" (the user's layouts), "blocked" (the host ISA's vector width) or "blocked<L>".
int64_t parse_layout(const std::string& layout, int64_t auto_block, int lanes) {
  if (layout == "auto") return auto_block;
  if (layout == "plain") return 0;
  if (layout == "blocked") return lanes;
  const std::string prefix = "blocked";
  if (layout.rfind(prefix, 0) == 0 && layout.size() > prefix.size() && layout.size() <= 10) {
    const std::string digits = layout.substr(prefix.size());
    if (std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
        std::stoll(digits) > 0)
      return std::stoll(digits);
  }
  throw py::value_error("layout must be 'auto', 'plain', 'blocked' or 'blocked<N>', got '" +
                        layout + "'");
}

int host_lanes() { return isa_lanes(host_isa()); }

// dtype="float32" | "int8": the int8 version of c (int8_of), then its epilogue.
CompPtr finish(Computation c, const std::string& dtype, const Epilogue& e) {
  if (dtype == "int8") c = int8_of(c);
  else if (dtype != "float32")
    throw py::value_error("dtype must be 'float32' or 'int8', got '" + dtype + "'");
  c.epilogue = e;
  check_epilogue_dtype(c);
  return share(std::move(c));
}

std::string repr_tuple(const py::tuple& t) { return py::str(t).cast<std::string>(); }

void register_var_tensor(py::module_& m) {
  py::class_<Var>(m, "Var", "A loop variable of a computation.")
      .def_readonly("name", &Var::name)
      .def_readonly("extent", &Var::extent)
      .def_readonly("reduction", &Var::reduction, "True if it does not index the output")
      .def("__repr__", [](const Var& v) {
        return "Var('" + v.name + "', " + std::to_string(v.extent) +
               (v.reduction ? ", reduction=True)" : ")");
      });
  py::class_<Tensor>(m, "Tensor", "A tensor a computation reads or writes.")
      .def_readonly("name", &Tensor::name)
      .def_readonly("shape", &Tensor::shape, "user-facing (unpadded) shape")
      .def_readonly("alloc_shape", &Tensor::alloc_shape, "buffer the kernel reads (padded)")
      .def_readonly("pad", &Tensor::pad, "leading padding per dimension")
      .def_readonly("strides", &Tensor::strides, "element stride per variable name")
      .def("__repr__", [](const Tensor& t) {
        return "Tensor('" + t.name + "', shape=" + repr_tuple(t.shape) + ")";
      });
}

}  // namespace

namespace {

// Index letters are ASCII: refuse anything else up front (a message quoting a split UTF-8
// sequence would not even decode in Python).
void require_ascii(const std::string& s, const char* what) {
  for (size_t i = 0; i < s.size(); ++i)
    if (static_cast<unsigned char>(s[i]) >= 0x80)
      throw py::value_error(std::string(what) + " must be ASCII (index letters a-z, A-Z); "
                            "found a non-ASCII character at byte " + std::to_string(i));
}

}  // namespace

#define EPILOGUE_DOC                                                                      \
  "terms joined by '+' in this order: optional 'bias', optional 'add', optional 'relu' | "  \
  "'relu6' | 'gelu' (exact, erf form): out = act(acc + bias[channel] + residual), channel "  \
  "the output channel (K of conv2d, the last output dim otherwise); '' for none"

#define DTYPE_DOC                                                                          \
  "dtype: 'float32', or 'int8': a uint8 (activations) times b int8 (weights), same shapes and "\
  "layouts as float32, summed exactly in int32 (the output, int32, when there is no epilogue); "\
  "the epilogue then starts with 'scale' and gives float32: act(float(acc) * scale[channel] + "\
  "bias + residual) (e.g. 'scale', 'scale+bias+relu'); a last term 'requant' makes it uint8: "\
  "quantize_u8(that, out_scale, out_zero_point) (e.g. 'scale+bias+relu+requant'; the "\
  "parameters per call or set_constant). The loop nest is float32's with the "\
  "reduction variable (k, or c of a conv2d) counting groups of 4 values (zero-padded)"

void register_computation(py::module_& m) {
  register_var_tensor(m);
  py::class_<Computation, CompPtr>(m, "Computation",
                                   "out += in0 * in1 summed over reduction variables.")
      .def_readonly("kind", &Computation::kind)
      .def_readonly("spec", &Computation::spec)
      .def_readonly("conv_stride", &Computation::conv_stride, "conv2d only (1 otherwise)")
      .def_readonly("conv_pad", &Computation::conv_pad, "conv2d only (0 otherwise)")
      .def_readonly("block", &Computation::block,
                    "blocked layout: conv2d output channels / matmul B panels (0: plain)")
      .def_readonly("groups", &Computation::groups, "conv2d only: groups (1: a plain conv)")
      .def_readonly("dtype", &Computation::dtype,
                    "'float32', or 'int8': u8 activations (a) times s8 weights (b) summed in "
                    "int32; the reduction variable (k, or c of a conv2d) counts groups of 4")
      .def_property_readonly("epilogue", [](const Computation& c) { return c.epilogue.str(); },
                             "the epilogue spec, e.g. 'bias+relu' ('' for none)")
      .def_property_readonly("bias_shape",
                             [](const Computation& c) { return to_tuple(c.bias_shape()); },
                             "shape of the epilogue's bias: the output channels")
      .def("with_epilogue",
           [](const Computation& c, const std::string& spec) {
             return share(with_epilogue(c, spec));
           },
           py::arg("epilogue"), "This computation with another epilogue spec.")
      .def_property_readonly("name", &Computation::name)
      .def_property_readonly("flops", &Computation::flops)
      .def_readonly("vars", &Computation::vars)
      .def_property_readonly("inputs",
                             [](const Computation& c) {
                               return py::make_tuple(view(c, c.in0), view(c, c.in1));
                             })
      .def_property_readonly("output", [](const Computation& c) { return view(c, c.out); })
      .def("header", &Computation::header)
      .def("default_schedule", [](CompPtr self) { return LoopTree::base(std::move(self)); },
           "The base schedule: one loop per variable in natural order, no splits.")
      .def("__eq__",
           [](const Computation& a, py::object b) {
             return py::isinstance<Computation>(b) && a == b.cast<const Computation&>();
           })
      .def("__hash__", [](const Computation& c) { return py::hash(py::str(c.header())); })
      .def("__repr__", [](const Computation& c) { return "Computation('" + c.header() + "')"; })
      .def(py::pickle([](const Computation& c) { return c.header(); },
                      [](const std::string& h) { return share(parse_computation(h)); }));

  m.def("matmul",
        [](int64_t m_, int64_t k, int64_t n, const std::string& layout,
           const std::string& epilogue, const std::string& dtype) {
          const Epilogue e = parse_epilogue(epilogue);
          const int lanes = layout == "plain" ? 0 : host_lanes();
          // (int8: B holds bytes, a quarter of float32's)
          const int64_t kb = dtype == "int8" ? (k + 3) / 4 : k;
          const int64_t block = parse_layout(layout, default_matmul_block(m_, kb, n, lanes, isa_facts(host_isa()).l2_bytes), lanes);
          Computation c = block ? matmul_packed(m_, k, n, block) : matmul(m_, k, n);
          return finish(std::move(c), dtype, e);
        },
        py::arg("m"), py::arg("k"), py::arg("n"), py::arg("layout") = "auto",
        py::arg("epilogue") = "", py::arg("dtype") = "float32",
        "C[m,n] += A[m,k] * B[k,n]. layout: 'auto' packs B in column panels [N/L][K][L] "
        "(L: the host's vector width) when B is over twice the L2 and m >= 256, transposes B "
        "([N][K], 'blocked1') when n is narrow (1 < n < 2L, not a multiple of L), else "
        "'plain'; 'blocked' / 'blocked<L>' force the panels. epilogue: " EPILOGUE_DOC ". " DTYPE_DOC);
  m.def("batch_matmul",
        [](int64_t b, int64_t m_, int64_t k, int64_t n, const std::string& epilogue,
           const std::string& dtype) {
          const Epilogue e = parse_epilogue(epilogue);
          return finish(batch_matmul(b, m_, k, n), dtype, e);
        },
        py::arg("b"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("epilogue") = "",
        py::arg("dtype") = "float32",
        "C[b,m,n] += A[b,m,k] * B[b,k,n]. epilogue: " EPILOGUE_DOC ". " DTYPE_DOC);
  m.def("conv2d",
        [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r, int64_t s,
           int64_t stride, int64_t pad, const std::string& layout, int64_t groups,
           const std::string& epilogue, const std::string& dtype) {
          const Epilogue e = parse_epilogue(epilogue);
          const int lanes = layout == "plain" ? 0 : host_lanes();
          int64_t auto_block = default_conv2d_block(k, lanes);
          // grouped: blocks of output channels must not straddle groups
          if (groups > 1 && groups <= k && k % groups == 0 && auto_block > 0 &&
              (k / groups) % auto_block != 0 && !(groups == c && groups == k))
            auto_block = 0;
          const int64_t block = parse_layout(layout, auto_block, lanes);
          Computation cp = block ? conv2d_blocked(n, c, h, w, k, r, s, stride, pad, block, groups)
                                 : conv2d(n, c, h, w, k, r, s, stride, pad, groups);
          return finish(std::move(cp), dtype, e);
        },
        py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"), py::arg("k"), py::arg("r"),
        py::arg("s"), py::arg("stride") = 1, py::arg("pad") = 0, py::arg("layout") = "auto",
        py::arg("groups") = 1, py::arg("epilogue") = "", py::arg("dtype") = "float32",
        "O[n,k,oh,ow] += I[n,c,oh*stride+r-pad,ow*stride+s-pad] * W[k,c,r,s] (NCHW, KCRS "
        "arrays). layout: 'auto' blocks output channels by the host's vector width L (weights "
        "[K/L][C][R][S][L], output [N][K/L][OH][OW][L]; variables ko, ki) when k >= L, else "
        "'plain'; 'blocked' / 'blocked<L>' force it. groups: grouped convolution (weights "
        "[K][C/groups][R][S], PyTorch's layout; groups divides C and K; a blocked layout needs "
        "L to divide K/groups, so 'auto' is plain otherwise; depthwise, groups == C == K, blocks "
        "the input's channels too: [N][C/L][H][W][L]). epilogue: " EPILOGUE_DOC ". " DTYPE_DOC);
  m.def("contraction",
        [](const std::string& spec, const std::map<std::string, int64_t>& sizes,
           const std::string& epilogue) {
          require_ascii(spec, "the contraction spec");
          for (const auto& kv : sizes) require_ascii(kv.first, "a size name");
          const Epilogue e = parse_epilogue(epilogue);
          Computation c = contraction(spec, sizes);
          c.epilogue = e;
          return share(std::move(c));
        },
        py::arg("spec"), py::arg("sizes"), py::arg("epilogue") = "",
        "A two-input contraction such as 'mk,kn->mn'. epilogue: " EPILOGUE_DOC
        " (the bias runs along the output's last letter).");
  m.def("parse_computation",
        [](const std::string& h) {
          require_ascii(h, "a computation header");
          return share(parse_computation(h));
        },
        py::arg("header"), "Inverse of Computation.header().");
}

}  // namespace looptune::bindings
