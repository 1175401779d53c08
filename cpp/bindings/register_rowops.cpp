// Bindings of the row-wise float32 operations (rowops.h): _core.gelu, softmax, layer_norm.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "looptune/rowops.h"
#include "looptune/thread_pool.h"
#include "register.h"

namespace looptune::bindings {

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// `obj` as a float32 C-contiguous array of at least one dimension (writable when `write`);
// TypeError for anything but a native float32 numpy array, ValueError for its layout.
py::array f32_array(const py::handle& obj, const char* what, bool write) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(what) + " must be a numpy float32 array, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const py::dtype dt = a.dtype();
  if (dt.attr("num").cast<int>() != py::detail::npy_api::NPY_FLOAT_ ||
      !dt.attr("isnative").cast<bool>())
    throw py::type_error(std::string(what) + " must have dtype float32 in native byte order, got " +
                         py::str(dt).cast<std::string>());
  if (a.ndim() == 0)
    throw py::value_error(std::string(what) +
                          " must have at least one dimension (got a 0-d array)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
  if (write && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  return a;
}

// The output: a new array shaped like x, or `out` checked (float32, C-contiguous, writable, x's
// shape, either x itself or not overlapping it).
py::array output_like(const py::array& x, const py::object& out) {
  if (out.is_none())
    return py::array(py::dtype::of<float>(),
                     std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  py::array o = f32_array(out, "out", true);
  if (std::vector<py::ssize_t>(o.shape(), o.shape() + o.ndim()) !=
      std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()))
    throw py::value_error("out has shape " + shape_str(o) + ", x has " + shape_str(x));
  const char* xb = static_cast<const char*>(x.data());
  const char* ob = static_cast<const char*>(o.data());
  const py::ssize_t bytes = x.nbytes();
  if (xb != ob && bytes > 0 && xb < ob + bytes && ob < xb + bytes)
    throw py::value_error("out overlaps x partially: pass x itself (in place) or a separate array");
  return o;
}

const char* const kThreadsNote =
    " Runs on the engine's thread pool at looptune.get_num_threads() threads (results do not "
    "depend on the count), GIL released. isa: 'avx512' or 'avx2' (default: the host's best).";

}  // namespace

void register_rowops(py::module_& m) {
  m.def(
      "gelu",
      [](const py::object& x, const py::object& out, const std::optional<std::string>& isa) {
        const Isa I = resolve_isa(isa);
        py::array X = f32_array(x, "x", false);
        py::array Y = output_like(X, out);
        const float* px = static_cast<const float*>(X.data());
        float* py_ = static_cast<float*>(Y.mutable_data());
        const int64_t n = static_cast<int64_t>(X.size());
        {
          py::gil_scoped_release release;
          gelu(px, py_, n, I, num_threads());
        }
        return Y;
      },
      py::arg("x"), py::arg("out") = py::none(), py::kw_only(), py::arg("isa") = py::none(),
      (std::string("Exact (erf) GELU of a float32 C-contiguous array: x/2 (1 + erf(x / sqrt 2)), "
                   "into `out` (a new array when None; may be x itself). Matches "
                   "torch.nn.functional.gelu within ~1e-6; gelu(-inf) = -0, gelu(inf) = inf, "
                   "NaN stays NaN.") + kThreadsNote).c_str());
  m.def(
      "softmax",
      [](const py::object& x, double scale, const py::object& out,
         const std::optional<std::string>& isa) {
        const Isa I = resolve_isa(isa);
        if (!std::isfinite(scale))
          throw py::value_error("scale must be finite, got " + std::to_string(scale));
        py::array X = f32_array(x, "x", false);
        py::array Y = output_like(X, out);
        const int64_t d = X.shape(X.ndim() - 1);
        const int64_t rows = d ? static_cast<int64_t>(X.size()) / d : 0;
        const float* px = static_cast<const float*>(X.data());
        float* py_ = static_cast<float*>(Y.mutable_data());
        const float s = static_cast<float>(scale);
        {
          py::gil_scoped_release release;
          softmax(px, py_, rows, d, s, I, num_threads());
        }
        return Y;
      },
      py::arg("x"), py::arg("scale") = 1.0, py::arg("out") = py::none(), py::kw_only(),
      py::arg("isa") = py::none(),
      (std::string("Softmax over the last dim of x * scale (float32, C-contiguous, any leading "
                   "shape): exp(x*scale - rowmax) / rowsum, into `out` (a new array when None; "
                   "may be x itself). Matches torch.softmax(x * scale, -1) within ~1e-6 "
                   "relative; a row that is all -inf (or holds NaN or +inf) gives NaN, -inf "
                   "entries of other rows 0. ValueError for a non-finite scale.") +
       kThreadsNote).c_str());
  m.def(
      "layer_norm",
      [](const py::object& x, const py::object& weight, const py::object& bias, double eps,
         const py::object& out, const std::optional<std::string>& isa) {
        const Isa I = resolve_isa(isa);
        if (!std::isfinite(eps) || !(eps > 0.0))
          throw py::value_error("eps must be finite and positive, got " + std::to_string(eps));
        py::array X = f32_array(x, "x", false);
        py::array W, B;
        if (!weight.is_none()) W = f32_array(weight, "weight", false);
        if (!bias.is_none()) B = f32_array(bias, "bias", false);
        // normalized shape: weight's (or bias's) shape, else the last dim; x must end with it
        const py::array* norm = !weight.is_none() ? &W : !bias.is_none() ? &B : nullptr;
        if (!weight.is_none() && !bias.is_none() &&
            std::vector<py::ssize_t>(W.shape(), W.shape() + W.ndim()) !=
                std::vector<py::ssize_t>(B.shape(), B.shape() + B.ndim()))
          throw py::value_error("weight has shape " + shape_str(W) + ", bias has " + shape_str(B));
        int64_t d = X.shape(X.ndim() - 1);
        if (norm) {
          const py::ssize_t k = norm->ndim();
          bool ok = k <= X.ndim();
          for (py::ssize_t j = 0; ok && j < k; ++j)
            ok = norm->shape(j) == X.shape(X.ndim() - k + j);
          if (!ok)
            throw py::value_error(std::string(!weight.is_none() ? "weight" : "bias") +
                                  " has shape " + shape_str(*norm) + ", which x's shape " +
                                  shape_str(X) + " does not end with");
          d = static_cast<int64_t>(norm->size());
        }
        py::array Y = output_like(X, out);
        const int64_t rows = d ? static_cast<int64_t>(X.size()) / d : 0;
        const float* px = static_cast<const float*>(X.data());
        const float* pw = weight.is_none() ? nullptr : static_cast<const float*>(W.data());
        const float* pb = bias.is_none() ? nullptr : static_cast<const float*>(B.data());
        float* py_ = static_cast<float*>(Y.mutable_data());
        const float e = static_cast<float>(eps);
        if (!(e > 0.0f)) throw py::value_error("eps underflows float32: " + std::to_string(eps));
        {
          py::gil_scoped_release release;
          layer_norm(px, py_, rows, d, pw, pb, e, I, num_threads());
        }
        return Y;
      },
      py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(),
      py::arg("eps") = 1e-5, py::arg("out") = py::none(), py::kw_only(),
      py::arg("isa") = py::none(),
      (std::string("Layer norm of float32 C-contiguous x over its trailing dims of weight's "
                   "shape (bias's when only bias is given; the last dim when neither): "
                   "(x - mean) / sqrt(var + eps) * weight + bias with the biased variance "
                   "(two passes), into `out` (a new array when None; may be x itself). Matches "
                   "torch.nn.functional.layer_norm within ~1e-5. ValueError for eps <= 0 or "
                   "not finite, or shapes that do not fit.") +
       kThreadsNote).c_str());
}

}  // namespace looptune::bindings
