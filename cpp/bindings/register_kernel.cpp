// Python bindings of Kernel (validated numpy calls, timing) and the CPU queries.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>

#include "looptune/kernel.h"
#include "looptune/quantize.h"
#include "looptune/thread_pool.h"
#include "register.h"

namespace looptune::bindings {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// numpy type numbers of the arguments: float32, and int8 computations' u8 / s8 / s32.
constexpr int kF32 = py::detail::npy_api::NPY_FLOAT_, kU8 = py::detail::npy_api::NPY_UBYTE_,
              kS8 = py::detail::npy_api::NPY_BYTE_, kS32 = py::detail::npy_api::NPY_INT_;

const char* type_name(int num) {
  return num == kU8 ? "uint8" : num == kS8 ? "int8" : num == kS32 ? "int32" : "float32";
}

// The element types of a kernel's a, b and out.
struct ArgTypes {
  int a = kF32, b = kF32, out = kF32;
};
ArgTypes arg_types(const Computation& c) {
  if (!c.is_int8()) return {};
  return {kU8, kS8, c.epilogue.empty() ? kS32 : c.epilogue.requant ? kU8 : kF32};
}

// Checks dtype, contiguity (or the element `strides` a kernel was compiled with) and shape;
// returns the array (a view, never a copy).
py::array checked(const py::handle& obj, const char* what, const TensorAccess& t, bool write,
                  int type = kF32, const std::vector<int64_t>* strides = nullptr);

// The caller's strides of a kernel's tensor t (0 a, 1 b, 2 out), nullptr for a dense one.
const std::vector<int64_t>* strides_of(const Kernel& k, int t) {
  return k.views().strided(t) ? &k.strides(t) : nullptr;
}

int elem_size(int type) { return type == kU8 || type == kS8 ? 1 : 4; }

// Bytes from the first element that a view of `shape` spans (dense without `strides`).
int64_t span_bytes(const std::vector<int64_t>& shape, const std::vector<int64_t>* strides,
                   int elem) {
  int64_t n = 1, dense = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 0) return 0;
    n += (shape[d] - 1) * (strides ? (*strides)[d] : dense);
    dense *= shape[d];
  }
  return n * elem;
}

// The epilogue's operands as tensors (bias: the output channels; residual: the output's shape).
TensorAccess bias_tensor(const Computation& c) {
  TensorAccess t;
  t.name = "bias";
  t.shape = c.bias_shape();
  return t;
}

TensorAccess residual_tensor(const Kernel& k) {
  TensorAccess t;
  t.name = "residual";
  t.shape = k.out_shape();  // an out view's shape (the residual is read at its offsets)
  return t;
}

// t with the shape of the caller's buffer (a BufferView's, see Kernel::in0_shape).
TensorAccess caller(const TensorAccess& t, const std::vector<int64_t>& shape) {
  TensorAccess u;
  u.name = t.name;
  u.shape = shape;
  return u;
}

// bias / residual given exactly when the epilogue names them (a constant bias may stand in for
// bias). TypeError otherwise.
void check_epilogue_args(const Kernel& k, bool has_bias, bool has_res, bool has_scale) {
  const Epilogue& e = k.tree().computation().epilogue;
  const std::string spec = e.empty() ? "none" : "'" + e.str() + "'";
  if (has_scale && !e.scale)
    throw py::type_error("scale given, but this kernel's epilogue (" + spec + ") has no scale");
  if (e.scale && !has_scale && !k.has_constant_scale())
    throw py::type_error("scale is required: this kernel's epilogue is " + spec +
                         " (or fix it once with set_constant(b, scale=...))");
  if (has_bias && !e.bias)
    throw py::type_error("bias given, but this kernel's epilogue (" + spec + ") has no bias");
  if (has_res && !e.add)
    throw py::type_error("residual given, but this kernel's epilogue (" + spec +
                         ") has no 'add'");
  if (e.bias && !has_bias && !k.has_constant_bias())
    throw py::type_error("bias is required: this kernel's epilogue is " + spec +
                         " (or fix it once with set_constant(b, bias=...))");
  if (e.add && !has_res)
    throw py::type_error("residual is required: this kernel's epilogue is " + spec);
}

// A 'requant' epilogue's out_scale / out_zero_point (given per call, or fixed by set_constant):
// TypeError for missing or unexpected ones and non-numbers, ValueError for bad values. Returns
// {0, 0} (the kernel's constant ones) when neither is given.
std::pair<float, int32_t> requant_args(const Kernel* k, const Epilogue& e, py::handle scale,
                                       py::handle zp) {
  const bool has_s = !scale.is_none(), has_z = !zp.is_none();
  const std::string spec = e.empty() ? "none" : "'" + e.str() + "'";
  if ((has_s || has_z) && !e.requant)
    throw py::type_error(std::string(has_s ? "out_scale" : "out_zero_point") +
                         " given, but this kernel's epilogue (" + spec + ") has no requant");
  if (!e.requant) return {0.0f, 0};
  if (has_s != has_z) throw py::type_error("give both out_scale and out_zero_point, or neither");
  if (!has_s) {
    if (k && !k->has_constant_requant())
      throw py::type_error("out_scale and out_zero_point are required: this kernel's epilogue "
                           "is " + spec + " (or fix them once with set_constant(b, "
                           "out_scale=..., out_zero_point=...))");
    return {0.0f, 0};
  }
  const auto type_of = [](py::handle h) {
    return py::str(py::type::of(h).attr("__name__")).cast<std::string>();
  };
  if (py::isinstance<py::bool_>(scale) ||
      !(py::isinstance<py::float_>(scale) || py::isinstance<py::int_>(scale) ||
        py::hasattr(scale, "__float__")))
    throw py::type_error("out_scale must be a float, got " + type_of(scale));
  if (py::isinstance<py::bool_>(zp) || !py::hasattr(zp, "__index__"))
    throw py::type_error("out_zero_point must be an int, got " + type_of(zp));
  const double s = py::float_(py::reinterpret_borrow<py::object>(scale)).cast<double>();
  const float sf = static_cast<float>(s);
  if (!std::isfinite(sf) || !(sf > 0.0f))
    throw py::value_error("out_scale must be finite and positive (as a float32), got " +
                          py::repr(scale).cast<std::string>());
  PyObject* idx = PyNumber_Index(zp.ptr());
  if (!idx) throw py::error_already_set();
  int overflow = 0;
  const long long z = PyLong_AsLongLongAndOverflow(idx, &overflow);
  Py_DECREF(idx);
  if (z == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow) throw py::value_error("out_zero_point must be in 0..255, got " +
                                      py::repr(zp).cast<std::string>());
  if (z < 0 || z > 255)
    throw py::value_error("out_zero_point must be in 0..255, got " +
                          py::repr(zp).cast<std::string>());
  return {sf, static_cast<int32_t>(z)};
}

py::array checked(const py::handle& obj, const char* what, const TensorAccess& t, bool write,
                  int type, const std::vector<int64_t>* strides) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(what) + " must be a numpy " + type_name(type) +
                         " array, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  // Compare the type and byte order, not the dtype object: a float32 dtype may carry metadata.
  const py::dtype dt = a.dtype();
  if (dt.attr("num").cast<int>() != type || !dt.attr("isnative").cast<bool>())
    throw py::type_error(std::string(what) + " must have dtype " + type_name(type) +
                         " in native byte order" +
                         (type == kF32 ? std::string() : std::string(" (an int8 kernel)")) +
                         ", got " +
                         py::str(dt).cast<std::string>() + " ('" +
                         py::str(dt.attr("str")).cast<std::string>() + "')");
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  if (got != t.shape)
    throw py::value_error(std::string(what) + " has shape " + shape_str(got) + ", expected " +
                          shape_str(t.shape) + " for tensor " + t.name);
  if (strides) {
    const int64_t eb = elem_size(type);
    bool same = true;
    for (size_t d = 0; d < got.size(); ++d)
      same = same && (got[d] <= 1 || a.strides()[d] == (*strides)[d] * eb);
    if (!same) {
      std::vector<int64_t> have(a.strides(), a.strides() + a.ndim());
      for (int64_t& x : have) x = x % eb == 0 ? x / eb : x;
      throw py::value_error(std::string(what) + " has element strides " + shape_str(have) +
                            ", but this kernel was compiled for strides " +
                            shape_str(*strides) + " of tensor " + t.name +
                            " (compile(strides=...)); pass a view with exactly those strides");
    }
  } else if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
  }
  if (write && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  return a;
}

// The bytes [lo, hi) an array's elements span (any strides).
std::pair<const char*, const char*> byte_range(const py::array& a) {
  const char* lo = static_cast<const char*>(a.data());
  const char* hi = lo + a.itemsize();
  if (a.size() == 0) return {lo, lo};
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    const py::ssize_t reach = (a.shape()[d] - 1) * a.strides()[d];
    if (reach < 0) lo += reach;
    else hi += reach;
  }
  return {lo, hi};
}

bool overlap(const py::array& x, const py::array& y) {
  const auto a = byte_range(x), b = byte_range(y);
  return a.first < b.second && b.first < a.second;
}

// The general call: validates each argument with its typed error, allocates the output.
py::array checked_call(const Kernel& k, py::handle a, py::handle b, py::handle out,
                       py::handle bias, py::handle res, py::handle scale,
                       py::handle out_scale, py::handle out_zp) {
  const Computation& c = k.tree().computation();
  const ArgTypes ty = arg_types(c);
  check_epilogue_args(k, !bias.is_none(), !res.is_none(), !scale.is_none());
  const auto [rq_scale, rq_zp] = requant_args(&k, c.epilogue, out_scale, out_zp);
  py::array A = checked(a, "a", caller(c.in0, k.in0_shape()), false, ty.a, strides_of(k, 0)), B,
            Bias, Res, Scale;
  if (!bias.is_none()) Bias = checked(bias, "bias", bias_tensor(c), false);
  if (!scale.is_none()) Scale = checked(scale, "scale", bias_tensor(c), false);
  if (!res.is_none())
    Res = checked(res, "residual", residual_tensor(k), false, kF32, strides_of(k, 2));
  if (b.is_none() && !k.has_constant_in1())
    throw py::value_error("b is required: this kernel has no constant operand (set_constant)");
  if (!b.is_none()) B = checked(b, "b", c.in1, false, ty.b, strides_of(k, 1));
  if (out.is_none() && k.views().strided(2))
    throw py::value_error("out is required: this kernel writes into a strided output "
                          "(compiled with strides['out'])");
  py::array O;
  if (out.is_none() && k.views().out.active()) {  // a view's border is zero
    O = py::module_::import("numpy").attr("zeros")(py::tuple(py::cast(k.out_shape())), "float32").cast<py::array>();
  } else if (out.is_none()) {  // no zero-fill: Kernel::run writes every element
    if (ty.out == kS32) O = py::array_t<int32_t>(c.out.shape);
    else if (ty.out == kU8) O = py::array_t<uint8_t>(c.out.shape);
    else O = py::array_t<float>(c.out.shape);
  } else {
    O = checked(out, "out", caller(c.out, k.out_shape()), true, ty.out, strides_of(k, 2));
    if (overlap(O, A) || (!b.is_none() && overlap(O, B)))
      throw py::value_error("out must not overlap a or b");
    if ((!bias.is_none() && overlap(O, Bias)) || (!res.is_none() && overlap(O, Res)) ||
        (!scale.is_none() && overlap(O, Scale)))
      throw py::value_error("out must not overlap bias, residual or scale");
  }
  const float* pa = static_cast<const float*>(A.data());
  const float* pb = b.is_none() ? nullptr : static_cast<const float*>(B.data());
  const float* pbias = bias.is_none() ? nullptr : static_cast<const float*>(Bias.data());
  const float* pres = res.is_none() ? nullptr : static_cast<const float*>(Res.data());
  const float* pscale = scale.is_none() ? nullptr : static_cast<const float*>(Scale.data());
  float* po = static_cast<float*>(O.mutable_data());
  {
    py::gil_scoped_release release;
    k.run(pa, pb, po, 0, pbias, pres, pscale, rq_scale, rq_zp);
  }
  return O;
}

// The fast path's test of one argument, read from numpy's array struct (no Python calls): a
// numpy array of float32 in native byte order, C-contiguous, of the tensor's shape (and
// writeable for `out`). Its data pointer, or nullptr for anything else (the general call then
// converts it or raises the typed error).
// With `strides` (a strided kernel tensor), the array must have exactly those element strides
// (dims of extent 1 excepted) instead of being C-contiguous.
float* fast_data(PyObject* o, const std::vector<int64_t>& shape, bool write, int type = kF32,
                 const std::vector<int64_t>* strides = nullptr) {
  namespace d = py::detail;
  if (!d::npy_api::get().PyArray_Check_(o)) return nullptr;
  const d::PyArray_Proxy* a = d::array_proxy(o);
  const d::PyArrayDescr_Proxy* dt = d::array_descriptor_proxy(a->descr);
  const int need = (strides ? 0 : d::npy_api::NPY_ARRAY_C_CONTIGUOUS_) |
                   (write ? d::npy_api::NPY_ARRAY_WRITEABLE_ : 0);
  if (dt->type_num != type || (dt->byteorder != '=' && dt->byteorder != '<') ||
      (a->flags & need) != need || a->nd != static_cast<int>(shape.size()))
    return nullptr;
  for (int i = 0; i < a->nd; ++i)
    if (a->dimensions[i] != shape[i]) return nullptr;
  if (strides)
    for (int i = 0; i < a->nd; ++i)
      if (shape[i] > 1 && a->strides[i] != (*strides)[i] * elem_size(type)) return nullptr;
  return reinterpret_cast<float*>(a->data);
}

bool is_array_or_none(py::handle h) {
  return h.is_none() || py::detail::npy_api::get().PyArray_Check_(h.ptr());
}

// Set while a thread runs Kernel._call_fallback, so a fallback that passes on something the
// engine cannot take gets the typed error instead of recursing.
thread_local bool in_fallback = false;

// Below this many flops (plus copied elements) a call keeps the GIL: releasing and taking it
// back costs more than the kernel, and other Python threads wait less than one GIL switch.
constexpr int64_t kKeepGilWork = 1 << 15;

// kernel(a, b=None, out=None). The fast path (numpy float32 arrays of the right shapes,
// C-contiguous, out not overlapping a or b) reads numpy's structs directly and allocates the
// output without zero-fill; anything else goes to Kernel._call_fallback when one is installed
// (looptune.interop: torch tensors) and to the general call, which raises the typed errors.
py::object call(py::handle self, const Kernel& k, py::handle a, py::handle b, py::handle out,
                py::handle bias, py::handle res, py::handle scale, py::handle out_scale,
                py::handle out_zp) {
  const Computation& c = k.tree().computation();
  // 'requant' kernels (and stray requant arguments) take the general call
  const bool requant = c.epilogue.requant || !out_scale.is_none() || !out_zp.is_none();
  const ArgTypes ty = arg_types(c);
  const bool has_b = !b.is_none(), has_out = !out.is_none();
  const std::vector<int64_t>*sa = strides_of(k, 0), *sb = strides_of(k, 1), *so = strides_of(k, 2);
  const float* pa = fast_data(a.ptr(), k.in0_shape(), false, ty.a, sa);
  const float* pb = has_b ? fast_data(b.ptr(), c.in1.shape, false, ty.b, sb) : nullptr;
  float* po = has_out ? fast_data(out.ptr(), k.out_shape(), true, ty.out, so) : nullptr;
  // The epilogue's operands: the no-epilogue case costs three pointer compares.
  const bool has_bias = !bias.is_none(), has_res = !res.is_none(), has_scale = !scale.is_none();
  const Epilogue& e = c.epilogue;
  bool epi_ok = !has_bias && !has_res && !has_scale;
  const float *pbias = nullptr, *pres = nullptr, *pscale = nullptr;
  if (!e.empty() || !epi_ok) {
    epi_ok = has_bias == e.bias && has_res == e.add && has_scale == e.scale;
    if (e.bias && !has_bias && k.has_constant_bias())
      epi_ok = has_res == e.add && has_scale == e.scale;
    if (e.scale && !has_scale && k.has_constant_scale())
      epi_ok = has_res == e.add && (has_bias == e.bias || k.has_constant_bias());
    if (epi_ok && has_bias) epi_ok = (pbias = fast_data(bias.ptr(), c.bias_shape(), false));
    if (epi_ok && has_res) epi_ok = (pres = fast_data(res.ptr(), k.out_shape(), false, kF32, so));
    if (epi_ok && has_scale) epi_ok = (pscale = fast_data(scale.ptr(), c.bias_shape(), false));
  }
  if (!requant && epi_ok && pa && (has_b ? pb != nullptr : k.has_constant_in1()) &&
      (po || (!has_out && !k.views().out.active() && !so))) {
    const int64_t out_bytes = span_bytes(k.out_shape(), so, 4);
    auto overlaps = [&](const float* x, int64_t bytes) {
      const char *lo = reinterpret_cast<const char*>(x), *olo = reinterpret_cast<char*>(po);
      return lo < olo + out_bytes && olo < lo + bytes;
    };
    if (!po || (!overlaps(pa, span_bytes(k.in0_shape(), sa, c.in0.elem_bytes())) &&
                !(pb && overlaps(pb, span_bytes(c.in1.shape, sb, c.in1.elem_bytes()))) &&
                !(pbias && overlaps(pbias, 4 * c.bias_shape()[0])) &&
                !(pscale && overlaps(pscale, 4 * c.bias_shape()[0])) &&
                !(pres && overlaps(pres, out_bytes)))) {
      py::object result;
      if (po) {
        result = py::reinterpret_borrow<py::object>(out);
      } else {
        const auto& api = py::detail::npy_api::get();
        static_assert(sizeof(Py_intptr_t) == sizeof(int64_t));
        result = py::reinterpret_steal<py::object>(api.PyArray_NewFromDescr_(
            api.PyArray_Type_, api.PyArray_DescrFromType_(ty.out),
            static_cast<int>(c.out.shape.size()),
            reinterpret_cast<const Py_intptr_t*>(c.out.shape.data()), nullptr, nullptr, 0,
            nullptr));
        if (!result) throw py::error_already_set();
        po = reinterpret_cast<float*>(py::detail::array_proxy(result.ptr())->data);
      }
      const int64_t work = c.flops() + c.in0.alloc_numel() + c.in1.alloc_numel() +
                           c.out.alloc_numel();
      if (work < kKeepGilWork) {
        k.run(pa, pb, po, 0, pbias, pres, pscale);
      } else {
        py::gil_scoped_release release;
        k.run(pa, pb, po, 0, pbias, pres, pscale);
      }
      return result;
    }
  }
  if (!in_fallback && !requant && !(is_array_or_none(a) && is_array_or_none(b) && is_array_or_none(out) &&
                        is_array_or_none(bias) && is_array_or_none(res) &&
                        is_array_or_none(scale))) {
    py::object fallback = py::getattr(py::type::handle_of(self), "_call_fallback", py::none());
    if (!fallback.is_none()) {
      in_fallback = true;
      struct Reset { ~Reset() { in_fallback = false; } } reset;
      if (!has_bias && !has_res && !has_scale) return fallback(self, a, b, out);
      if (!has_scale)
        return fallback(self, a, b, out, py::arg("bias") = bias, py::arg("residual") = res);
      return fallback(self, a, b, out, py::arg("bias") = bias, py::arg("residual") = res,
                      py::arg("scale") = scale);
    }
  }
  return checked_call(k, a, b, out, bias, res, scale, out_scale, out_zp);
}

constexpr const char* kCallDoc =
    "__call__($self, /, a, b=None, out=None, *, bias=None, residual=None, scale=None, "
    "out_scale=None, out_zero_point=None)\n--\n\n"
    "Compute out = a (x) b on numpy float32 arrays, then the computation's epilogue "
    "(bias: the output channels, residual: the output's shape; given exactly when the "
    "epilogue names them, bias also fixed by set_constant); returns out (allocated when None). "
    "int8 computations: a uint8, b int8 (the user's layouts), out int32 without an epilogue, "
    "else float32 = act(float(acc) * scale + bias + residual) (scale: float32 per output "
    "channel, or fixed by set_constant); an epilogue ending in 'requant': out uint8 = "
    "quantize_u8(that, out_scale, out_zero_point) (out_scale: a float > 0, out_zero_point: "
    "an int in 0..255; per call or fixed by set_constant). "
    "b=None uses the constant operand kept by set_constant(). Arguments that are not numpy "
    "arrays go to Kernel._call_fallback(kernel, a, b, out) when the class has one "
    "(looptune.interop installs the torch one).";

// Kernel.__call__ as a vectorcall method of the type (METH_FASTCALL): the arguments are read
// off the stack, with no argument tuple, keyword dict or pybind11 dispatch; errors are the
// ones Python gives for a def of the same signature.
PyObject* call_method(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                      PyObject* kwnames) {
  try {
    static const char* const names[8] = {"a",        "b",     "out",       "bias",
                                         "residual", "scale", "out_scale", "out_zero_point"};
    PyObject* slot[8] = {nullptr, Py_None, Py_None, Py_None, Py_None, Py_None, Py_None, Py_None};
    bool given[8] = {false, false, false, false, false, false, false, false};
    if (nargs > 3)
      throw py::type_error("Kernel.__call__() takes at most 3 arguments (a, b, out), got " +
                           std::to_string(nargs));
    for (Py_ssize_t i = 0; i < nargs; ++i) slot[i] = args[i], given[i] = true;
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; ++j) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, j);
      int idx = -1;
      for (int i = 0; i < 8 && idx < 0; ++i)
        if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0) idx = i;
      if (idx < 0)
        throw py::type_error("Kernel.__call__() got an unexpected keyword argument '" +
                             py::str(name).cast<std::string>() + "'");
      if (given[idx])
        throw py::type_error(std::string("Kernel.__call__() got multiple values for argument '") +
                             names[idx] + "'");
      slot[idx] = args[nargs + j], given[idx] = true;
    }
    if (!given[0]) throw py::type_error("Kernel.__call__() missing required argument 'a'");
    const Kernel& k = py::handle(self).cast<const Kernel&>();
    return call(self, k, slot[0], slot[1], slot[2], slot[3], slot[4], slot[5], slot[6], slot[7])
        .release()
        .ptr();
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  } catch (...) {
    py::detail::try_translate_exceptions();
    return nullptr;
  }
}

py::dict facts_dict(const CompileFacts& f) {
  py::dict d;
  d["isa"] = f.isa;
  d["lanes"] = f.lanes;
  d["vectorized"] = f.vectorized;
  d["reduction_vectorized"] = f.reduction_vectorized;
  d["out_transposed"] = f.out_transposed;
  d["epilogue_fused"] = f.epilogue_fused;
  d["tile_loops"] = f.tile_loops;
  d["tile_accumulators"] = f.tile_accumulators;
  d["tile_rows"] = f.tile_rows;
  d["tile_vectors"] = f.tile_vectors;
  d["accumulators_hoisted"] = f.accumulators_hoisted;
  d["hoisted_loops"] = f.hoisted_loops;
  d["zero_init"] = f.zero_init;
  d["runtime_loops"] = f.runtime_loops;
  d["unrolled_loops"] = f.unrolled_loops;
  d["code_bytes"] = f.code_bytes;
  d["fma"] = f.fma;
  d["loads"] = f.loads;
  d["stores"] = f.stores;
  d["broadcasts"] = f.broadcasts;
  d["masked"] = f.masked;
  d["pointer_updates"] = f.pointer_updates;
  d["branches"] = f.branches;
  d["tail_bodies"] = f.tail_bodies;
  d["spills"] = f.spills;
  d["parallel_loop"] = f.parallel_loop;
  d["parallel_iterations"] = f.parallel_iterations;
  d["compile_seconds"] = f.compile_seconds;
  d["int8_path"] = f.int8_path;
  py::dict access;
  access["in0"] = f.access[0];
  access["in1"] = f.access[1];
  access["out"] = f.access[2];
  d["access"] = access;
  return d;
}

constexpr double kMaxMinTime = 60.0;  // seconds of timing per call at most
constexpr int64_t kMaxRuns = 100'000'000;

// None: the process-wide count; otherwise 1..kMaxThreads (ValueError, TypeError for a non-int).
int checked_threads(const py::object& threads) {
  if (threads.is_none()) return 0;
  if (!py::isinstance<py::int_>(threads) || py::isinstance<py::bool_>(threads))
    throw py::type_error("threads must be an int or None, got " +
                         py::str(py::type::of(threads).attr("__name__")).cast<std::string>());
  const long long t = threads.cast<long long>();
  if (t < 1 || t > kMaxThreads)
    throw py::value_error("threads must be in 1.." + std::to_string(kMaxThreads) + ", got " +
                          std::to_string(t));
  return static_cast<int>(t);
}

TimingResult bench(const Kernel& k, double min_time, int64_t min_runs, int64_t max_runs,
                   bool prepacked, const py::object& threads_arg) {
  const int threads = checked_threads(threads_arg);
  if (!std::isfinite(min_time) || min_time < 0 || min_time > kMaxMinTime)
    throw py::value_error("min_time must be in [0, 60] seconds, got " + std::to_string(min_time));
  if (min_runs < 1 || max_runs < min_runs || max_runs > kMaxRuns)
    throw py::value_error("need 1 <= min_runs <= max_runs, got min_runs=" +
                          std::to_string(min_runs) + ", max_runs=" + std::to_string(max_runs) +
                          " (max_runs at most 10**8)");
  py::gil_scoped_release release;
  return k.benchmark(min_time, min_runs, max_runs, prepacked, threads);
}

}  // namespace

void register_kernel(py::module_& m) {
  py::class_<TimingResult>(m, "TimingResult", "Timing of a kernel: best and median run.")
      .def_readonly("min_seconds", &TimingResult::min_seconds)
      .def_readonly("median_seconds", &TimingResult::median_seconds)
      .def_readonly("gflops", &TimingResult::gflops, "from the best run")
      .def_readonly("median_gflops", &TimingResult::median_gflops)
      .def_readonly("runs", &TimingResult::runs)
      .def("__repr__", [](const TimingResult& r) {
        return "TimingResult(gflops=" + std::to_string(r.gflops) +
               ", median_gflops=" + std::to_string(r.median_gflops) +
               ", runs=" + std::to_string(r.runs) + ")";
      });

  py::class_<Kernel> kernel(m, "Kernel", "A JIT-compiled loop tree.");
  kernel
      .def_property_readonly("tree", [](const Kernel& k) { return k.tree(); })
      .def_property_readonly("isa", [](const Kernel& k) { return isa_name(k.isa()); })
      .def_property_readonly("facts", [](const Kernel& k) { return facts_dict(k.facts()); })
      .def_property_readonly("assembly", &Kernel::assembly)
      .def_property_readonly(
          "views",
          [](const Kernel& k) {
            py::dict d;
            auto one = [](const BufferView& v) -> py::object {
              if (!v.active()) return py::none();
              return py::make_tuple(py::tuple(py::cast(v.shape)), py::tuple(py::cast(v.offset)));
            };
            d["in0"] = one(k.views().in0);
            d["out"] = one(k.views().out);
            return d;
          },
          "The buffer views it was compiled with: {'in0': (shape, offset) or None, 'out': ...}.")
      .def_property_readonly(
          "strides",
          [](const Kernel& k) {
            py::dict d;
            const char* const keys[3] = {"in0", "in1", "out"};
            for (int t = 0; t < 3; ++t)
              d[keys[t]] = k.views().strided(t) ? py::object(py::tuple(py::cast(k.strides(t))))
                                                : py::object(py::none());
            return d;
          },
          "The element strides it was compiled with (compile(strides=...)): {'in0': tuple or "
          "None (dense), 'in1': ..., 'out': ...}; facts['access'] tells which it reads or "
          "writes in place and which it packs at call time.")
      .def("set_constant",
           [](Kernel& k, const py::object& b, const py::object& bias, const py::object& scale,
              const py::object& out_scale, const py::object& out_zp) {
             const Computation& c = k.tree().computation();
             const std::string spec =
                 c.epilogue.empty() ? std::string("none") : "'" + c.epilogue.str() + "'";
             if (!bias.is_none() && !c.epilogue.bias)
               throw py::type_error("bias given, but this kernel's epilogue (" + spec +
                                    ") has no bias");
             if (!scale.is_none() && !c.epilogue.scale)
               throw py::type_error("scale given, but this kernel's epilogue (" + spec +
                                    ") has no scale");
             const auto [rq_scale, rq_zp] = requant_args(nullptr, c.epilogue, out_scale, out_zp);
             py::array B = checked(b, "b", c.in1, false, arg_types(c).b), Bias, Scale;
             if (!bias.is_none()) Bias = checked(bias, "bias", bias_tensor(c), false);
             if (!scale.is_none()) Scale = checked(scale, "scale", bias_tensor(c), false);
             k.set_constant_in1(static_cast<const float*>(B.data()));
             if (!bias.is_none()) k.set_constant_bias(static_cast<const float*>(Bias.data()));
             if (!scale.is_none()) k.set_constant_scale(static_cast<const float*>(Scale.data()));
             if (rq_scale > 0.0f) k.set_constant_requant(rq_scale, rq_zp);
           },
           py::arg("b"), py::arg("bias") = py::none(), py::arg("scale") = py::none(),
           py::arg("out_scale") = py::none(), py::arg("out_zero_point") = py::none(),
           "Keep a packed (kernel-layout) copy of b, e.g. constant weights; call with b=None. "
           "bias (and scale, int8 epilogues): also keep the epilogue's bias (scale), so calls "
           "may omit it; out_scale and out_zero_point, 'requant' epilogues: the same for the "
           "uint8 output's parameters).")
      .def_property_readonly("has_constant_requant", &Kernel::has_constant_requant)
      .def("weight_sums",
           [](const Kernel& k, const py::object& b) {
             const Computation& c = k.tree().computation();
             if (!c.is_int8()) throw py::type_error("weight_sums is for int8 kernels");
             py::array B = checked(b, "b", c.in1, false, kS8);
             std::vector<int32_t> s =
                 int8_weight_sums(c, static_cast<const int8_t*>(B.data()));
             py::array_t<int32_t> out(static_cast<py::ssize_t>(s.size()));
             std::copy(s.begin(), s.end(), out.mutable_data());
             return out;
           },
           py::arg("b"),
           "int8: each output channel's weight sum (int32 [N] of a matmul, [K] of a conv2d). "
           "With activations quantized as round(x / sa) + zp (zp != 0), the exact "
           "zero-point-free accumulator is acc - zp * sums: pass bias - zp * scale * sums "
           "(scale = sa * weight scales) as the epilogue's bias.")
      .def_property_readonly("has_constant_scale", &Kernel::has_constant_scale)
      .def_property_readonly("has_constant_bias", &Kernel::has_constant_bias)
      .def_property_readonly("has_constant", &Kernel::has_constant_in1)
      .def("benchmark", &bench, py::arg("min_time") = 0.01, py::arg("min_runs") = 3,
           py::arg("max_runs") = 100000, py::arg("prepacked") = false,
           py::arg("threads") = py::none(),
           "Time the kernel on its own aligned buffers (relayout copies included); "
           "prepacked=True packs b once before timing (constant weights); threads: how many "
           "threads share the parallel loop (None: looptune.get_num_threads(); a kernel "
           "without a parallel loop runs on one).")
      .def("threads_used",
           [](const Kernel& k, const py::object& t) { return k.threads_used(checked_threads(t)); },
           py::arg("threads") = py::none(),
           "Threads a call with `threads` uses: 1 without a parallel loop, at most its "
           "iterations.")
      .def("__repr__", [](const Kernel& k) {
        return "<Kernel " + k.tree().computation().name() + " " + isa_name(k.isa()) + " " +
               std::to_string(k.facts().code_bytes) + " bytes>";
      });

  {  // __call__ (call_method): a method descriptor, so calls skip pybind11's dispatch
    static PyMethodDef call_def = {"__call__", reinterpret_cast<PyCFunction>(
                                                   reinterpret_cast<void (*)()>(&call_method)),
                                   METH_FASTCALL | METH_KEYWORDS, kCallDoc};
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(kernel.ptr()), &call_def);
    if (!descr) throw py::error_already_set();
    kernel.attr("__call__") = py::reinterpret_steal<py::object>(descr);
  }

  m.def(
      "quantize_u8",
      [](const py::object& x, const py::object& scale, const py::object& zero_point,
         const py::object& out, const std::optional<std::string>& isa) {
        const Isa I = resolve_isa(isa);
        if (!py::isinstance<py::array>(x))
          throw py::type_error("x must be a numpy float32 array");
        py::array X = py::reinterpret_borrow<py::array>(x);
        TensorAccess t;
        t.name = "x";
        t.shape.assign(X.shape(), X.shape() + X.ndim());
        X = checked(x, "x", t, false, kF32);
        if (scale.is_none() != zero_point.is_none())
          throw py::type_error("give both scale and zero_point, or neither");
        float s = 0.0f;
        int32_t zp = 0;
        const bool given = !scale.is_none();
        if (given) {
          s = scale.cast<float>();
          if (!py::isinstance<py::int_>(zero_point) || py::isinstance<py::bool_>(zero_point))
            throw py::type_error("zero_point must be an int");
          const long long z = zero_point.cast<long long>();
          if (z < 0 || z > 255)
            throw py::value_error("zero_point must be in 0..255, got " + std::to_string(z));
          zp = static_cast<int32_t>(z);
        }
        py::array Q;
        if (out.is_none()) Q = py::array_t<uint8_t>(t.shape);
        else Q = checked(out, "out", t, true, kU8);
        const float* px = static_cast<const float*>(X.data());
        uint8_t* pq = static_cast<uint8_t*>(Q.mutable_data());
        const int64_t n = static_cast<int64_t>(X.size());
        {
          py::gil_scoped_release release;
          quantize_u8(px, n, pq, &s, &zp, given, I, num_threads());
        }
        return py::make_tuple(Q, s, zp);
      },
      py::arg("x"), py::arg("scale") = py::none(), py::arg("zero_point") = py::none(),
      py::arg("out") = py::none(), py::kw_only(), py::arg("isa") = py::none(),
      "Quantize a float32 array to uint8: returns (q, scale, zero_point) with "
      "q = clamp(round_half_even(x / scale) + zero_point, 0, 255). Without scale and "
      "zero_point they come from the range [min(x, 0), max(x, 0)] as in PyTorch's dynamic "
      "quantization (scale = range / 255, zero_point = round(-min / scale)); with them "
      "(static quantization, requantizing a float32 output) they are used as given. "
      "ValueError on a non-finite x. Large inputs run on the engine's thread pool at "
      "looptune.get_num_threads() threads (the results do not depend on the count); isa: "
      "'avx512' or 'avx2' (default: the host's best; the same results).");
  m.def(
      "quantize_per_channel_s8",
      [](const py::object& w, int axis) {
        if (!py::isinstance<py::array>(w))
          throw py::type_error("w must be a numpy float32 array");
        py::array W = py::reinterpret_borrow<py::array>(w);
        TensorAccess t;
        t.name = "w";
        t.shape.assign(W.shape(), W.shape() + W.ndim());
        W = checked(w, "w", t, false, kF32);
        const int nd = static_cast<int>(t.shape.size());
        if (nd == 0) throw py::value_error("w must have at least one dimension");
        if (axis < -nd || axis >= nd)
          throw py::value_error("axis " + std::to_string(axis) + " is out of range for " +
                                std::to_string(nd) + " dimensions");
        if (axis < 0) axis += nd;
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < nd; ++d) {
          if (d < axis) outer *= t.shape[d];
          if (d > axis) inner *= t.shape[d];
        }
        const int64_t ch = t.shape[axis];
        py::array_t<int8_t> Q(t.shape);
        py::array_t<float> S(static_cast<py::ssize_t>(ch));
        const float* pw = static_cast<const float*>(W.data());
        int8_t* pq = Q.mutable_data();
        float* ps = S.mutable_data();
        {
          py::gil_scoped_release release;
          quantize_per_channel_s8(pw, outer, ch, inner, pq, ps);
        }
        return py::make_tuple(Q, S);
      },
      py::arg("w"), py::arg("axis") = 0,
      "Symmetric per-channel int8 quantization of weights: returns (q int8 of w's shape, "
      "scale float32 [w.shape[axis]]) with scale[c] = max |w[c]| / 127 (1 for an all-zero "
      "channel) and q = clamp(round_half_even(w / scale[c]), -127, 127). For a matmul's B "
      "[K][N] use axis=1; for conv2d weights [K][C][R][S], axis=0.");

  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Set the engine's thread count (1..MAX_THREADS); use looptune.set_num_threads.");
  m.def("get_num_threads", &num_threads, "The engine's thread count.");
  m.attr("MAX_THREADS") = kMaxThreads;
  m.def("host_isa", [] { return isa_name(host_isa()); }, "The best ISA of this CPU.");
  m.def("isa_supported", [](const std::string& s) { return isa_supported(parse_isa(s)); },
        py::arg("isa"));
  m.def("cpu_name", &cpu_name);
  m.def("cpu_signature", &cpu_signature,
        "\"<vendor> family F model M\" from CPUID (the microarchitecture).");
  m.def(
      "measure_peak_gflops",
      [](std::optional<std::string> isa, double min_time) {
        if (!std::isfinite(min_time) || min_time < 0 || min_time > kMaxMinTime)
          throw py::value_error("min_time must be in [0, 60] seconds, got " +
                                std::to_string(min_time));
        Isa chosen = resolve_isa(isa);
        py::gil_scoped_release release;
        return measure_peak_gflops(chosen, min_time);
      },
      py::arg("isa") = py::none(), py::arg("min_time") = 0.05,
      "Measured single-core FP32 FMA peak of this machine.");
}

}  // namespace looptune::bindings
