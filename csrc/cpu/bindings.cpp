// csrc/cpu/bindings.cpp — the Python module minidl._C (pybind11).
//
// The kernels in this folder take raw C-contiguous buffers; this file is the border:
// it checks shapes and dtypes (with errors that name the op, the shapes and the fix),
// allocates outputs, and releases the GIL while a kernel runs so other Python
// threads (a data loader, say) keep going.  minidl/backend/cpu.py wraps these
// functions with numpy semantics (broadcasting, any strides).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pthread.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace {

// "(3, 4)" — a shape written the way Python prints it.
std::string shape_str(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < x.ndim(); ++d) s += (d ? ", " : "") + std::to_string(x.shape(d));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

// The dtype of an array as numpy names it: "float32", "int64", ...
// Without calling numpy's Python-level dtype.__str__ for the common cases: that costs
// ~10 us, more than a small kernel (the optimizer runs one call per parameter per step).
std::string dtype_str(const py::array& x) {
    const py::dtype dt = x.dtype();
    const char k = dt.kind();
    const py::ssize_t size = dt.itemsize();
    if (dt.byteorder() != '>') {
        if (k == 'f' && size == 4) return "float32";
        if (k == 'f' && size == 8) return "float64";
        if (k == 'i' && size == 8) return "int64";
        if (k == 'i' && size == 4) return "int32";
    }
    return py::str(dt);
}

// The strides of a 2-D or 3-D operand in elements, or false if one is not a whole number
// of elements (then the caller makes a contiguous copy).
bool element_strides(const py::array& x, std::size_t itemsize, minidl::Strides& st) {
    const py::ssize_t nd = x.ndim();
    py::ssize_t s[3] = {0, x.strides(nd - 2), x.strides(nd - 1)};
    if (nd == 3) s[0] = x.strides(0);
    for (py::ssize_t v : s)
        if (v % py::ssize_t(itemsize)) return false;
    st = {s[0] / py::ssize_t(itemsize), s[1] / py::ssize_t(itemsize), s[2] / py::ssize_t(itemsize)};
    return true;
}

template <typename T>
py::array matmul_typed(const py::array& a_any, const py::array& b_any) {
    // Any strides are read in place (a transposed view, a slice); only an operand whose
    // strides are not whole elements is copied.
    py::array a = a_any, b = b_any;
    minidl::Strides as{}, bs{};
    if (!element_strides(a, sizeof(T), as)) {
        a = py::array_t<T, py::array::c_style>::ensure(a_any);
        element_strides(a, sizeof(T), as);
    }
    if (!element_strides(b, sizeof(T), bs)) {
        b = py::array_t<T, py::array::c_style>::ensure(b_any);
        element_strides(b, sizeof(T), bs);
    }
    if (!a || !b) throw std::runtime_error("matmul: could not make C-contiguous copies of the inputs");
    const bool batched = a.ndim() == 3;
    const py::ssize_t batch = batched ? a.shape(0) : 1;
    const py::ssize_t M = a.shape(a.ndim() - 2), K = a.shape(a.ndim() - 1), N = b.shape(b.ndim() - 1);

    std::vector<py::ssize_t> shape{M, N};
    if (batched) shape.insert(shape.begin(), batch);
    py::array_t<T> c(shape);
    const T* pa = static_cast<const T*>(a.data());
    const T* pb = static_cast<const T*>(b.data());
    T* pc = c.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::matmul(pa, as, pb, bs, pc, minidl::Strides{M * N, N, 1}, batch, M, N, K);
    }
    return c;
}

py::array matmul(const py::array& a, const py::array& b) {
    // Built only when an error needs it: this is called for every matmul, large or tiny.
    const auto where = [&] { return "matmul: " + shape_str(a) + " @ " + shape_str(b) + ": "; };
    if (!((a.ndim() == 2 && b.ndim() == 2) || (a.ndim() == 3 && b.ndim() == 3)))
        throw py::value_error(where() + "expects two 2-D (M, K) @ (K, N) or two 3-D (B, M, K) @ "
                                      "(B, K, N) arrays; minidl.backend.cpu.matmul handles other "
                                      "ranks and broadcasting");
    if (a.ndim() == 3 && a.shape(0) != b.shape(0))
        throw py::value_error(where() + "batch sizes " + std::to_string(a.shape(0)) + " and " +
                              std::to_string(b.shape(0)) +
                              " differ (this kernel does not broadcast; "
                              "minidl.backend.cpu.matmul does)");
    const py::ssize_t ka = a.shape(a.ndim() - 1), kb = b.shape(b.ndim() - 2);
    if (ka != kb)
        throw py::value_error(where() + "inner dims " + std::to_string(ka) + " and " +
                              std::to_string(kb) + " differ");

    const std::string da = dtype_str(a), db = dtype_str(b);
    if (da != db)
        throw py::type_error(where() + "dtypes " + da + " and " + db +
                             " differ: cast one operand, e.g. b.astype(a.dtype)");
    if (da == "float32") return matmul_typed<float>(a, b);
    if (da == "float64") return matmul_typed<double>(a, b);
    throw py::type_error(where() + "dtype " + da +
                         " is not supported by the C++ kernel (float32 and float64 are); "
                         "use numpy.matmul for other dtypes");
}

template <typename T>
std::string name_of();
template <>
std::string name_of<float>() { return "float32"; }
template <>
std::string name_of<double>() { return "float64"; }
template <>
std::string name_of<std::int64_t>() { return "int64"; }

// An array a kernel updates in place: it must already be C-contiguous, writable and of
// dtype T (a copy would be updated instead of the caller's array).
template <typename T>
T* inplace_ptr(const std::string& op, const char* what, py::array& x, py::ssize_t n) {
    if (dtype_str(x) != name_of<T>() || !py::isinstance<py::array_t<T>>(x))
        throw py::type_error(op + ": " + what + " has dtype " + dtype_str(x) + ", expected " + name_of<T>());
    if (!(x.flags() & py::array::c_style))
        throw py::value_error(op + ": " + what + " " + shape_str(x) +
                              " must be C-contiguous (it is updated in place); "
                              "minidl.backend.cpu falls back to numpy for other layouts");
    if (!x.writeable()) throw py::value_error(op + ": " + what + " is read-only");
    if (x.size() != n)
        throw py::value_error(op + ": " + what + " " + shape_str(x) + " has " + std::to_string(x.size()) +
                              " elements, expected " + std::to_string(n));
    return static_cast<T*>(x.mutable_data());
}

// A read-only input as a C-contiguous array of dtype T (copied only if needed).
template <typename T>
py::array_t<T, py::array::c_style> input(const std::string& op, const char* what, const py::array& x) {
    if (dtype_str(x) != name_of<T>())
        throw py::type_error(op + ": " + what + " has dtype " + dtype_str(x) + ", expected " + name_of<T>() +
                             " (cast it first)");
    auto c = py::array_t<T, py::array::c_style>::ensure(x);
    if (!c) throw std::runtime_error(op + ": could not make a C-contiguous copy of " + what);
    return c;
}

template <typename T>
py::object sgd_step_typed(py::array param, const py::array& grad_any, py::object buf_obj, double lr, double mom,
                          double wd, bool nesterov, double damp) {
    const std::string op = "sgd_step";
    const py::ssize_t n = param.size();
    T* p = inplace_ptr<T>(op, "param", param, n);
    auto grad = input<T>(op, "grad", grad_any);
    if (grad.size() != n)
        throw py::value_error(op + ": grad " + shape_str(grad) + " does not match param " + shape_str(param));
    T* buf = nullptr;
    bool first = false;
    py::object ret = buf_obj;
    if (mom != 0) {
        py::array b;
        if (buf_obj.is_none()) {
            first = true;
            std::vector<py::ssize_t> shape(param.shape(), param.shape() + param.ndim());
            b = py::array_t<T>(shape);
            ret = b;
        } else {
            b = buf_obj.cast<py::array>();
        }
        buf = inplace_ptr<T>(op, "momentum_buf", b, n);
    }
    const T* g = grad.data();
    {
        py::gil_scoped_release no_gil;
        minidl::sgd_step(p, g, buf, n, lr, mom, wd, damp, nesterov, first);
    }
    return ret;
}

py::object sgd_step(py::array param, const py::array& grad, py::object buf, double lr, double mom, double wd,
                    bool nesterov, double damp) {
    const std::string d = dtype_str(param);
    if (d == "float32") return sgd_step_typed<float>(param, grad, buf, lr, mom, wd, nesterov, damp);
    if (d == "float64") return sgd_step_typed<double>(param, grad, buf, lr, mom, wd, nesterov, damp);
    throw py::type_error("sgd_step: param dtype " + d + " is not supported (float32 and float64 are)");
}

template <typename T>
void adam_step_typed(py::array param, const py::array& grad_any, py::array m, py::array v, long step, double lr,
                     double b1, double b2, double eps, double wd, bool decoupled) {
    const std::string op = "adam_step";
    const py::ssize_t n = param.size();
    T* p = inplace_ptr<T>(op, "param", param, n);
    T* pm = inplace_ptr<T>(op, "exp_avg", m, n);
    T* pv = inplace_ptr<T>(op, "exp_avg_sq", v, n);
    auto grad = input<T>(op, "grad", grad_any);
    if (grad.size() != n)
        throw py::value_error(op + ": grad " + shape_str(grad) + " does not match param " + shape_str(param));
    const T* g = grad.data();
    py::gil_scoped_release no_gil;
    minidl::adam_step(p, g, pm, pv, n, step, lr, b1, b2, eps, wd, decoupled);
}

void adam_step(py::array param, const py::array& grad, py::array m, py::array v, long step, double lr, double b1,
               double b2, double eps, double wd, bool decoupled) {
    if (step < 1)
        throw py::value_error("adam_step: step=" + std::to_string(step) +
                              ", but steps count from 1 (the first update is step 1)");
    const std::string d = dtype_str(param);
    if (d == "float32") return adam_step_typed<float>(param, grad, m, v, step, lr, b1, b2, eps, wd, decoupled);
    if (d == "float64") return adam_step_typed<double>(param, grad, m, v, step, lr, b1, b2, eps, wd, decoupled);
    throw py::type_error("adam_step: param dtype " + d + " is not supported (float32 and float64 are)");
}

// ids as a C-contiguous int64 array with negatives wrapped (numpy's indexing); IndexError
// for ids outside [-V, V).
py::array_t<std::int64_t, py::array::c_style> checked_ids(const std::string& op, const py::array& ids_any,
                                                          py::ssize_t V) {
    if (ids_any.dtype().kind() != 'i' && ids_any.dtype().kind() != 'u')
        throw py::type_error(op + ": ids must be integers, not " + dtype_str(ids_any));
    py::array_t<std::int64_t, py::array::c_style> ids(
        py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(ids_any));
    if (!ids) throw std::runtime_error(op + ": could not convert ids to int64");
    const std::int64_t* p = ids.data();
    const py::ssize_t R = ids.size();
    bool negative = false;
    std::int64_t bad = 0;
    bool has_bad = false;
    for (py::ssize_t r = 0; r < R; ++r) {
        const std::int64_t v = p[r];
        if (v < 0) negative = true;
        if (v < -V || v >= V) { has_bad = true; bad = v; break; }
    }
    if (has_bad)
        throw py::index_error(op + ": id " + std::to_string(bad) + " is out of range for a table of " +
                              std::to_string(V) + " rows");
    if (negative) {
        py::array_t<std::int64_t> w(ids.size());
        std::int64_t* q = w.mutable_data();
        for (py::ssize_t r = 0; r < R; ++r) q[r] = p[r] < 0 ? p[r] + V : p[r];
        return w;
    }
    return ids;
}

template <typename T>
py::array embedding_typed(const py::array& weight_any, const py::array& ids_any) {
    auto w = input<T>("embedding", "weight", weight_any);
    const py::ssize_t V = w.shape(0), D = w.shape(1);
    auto ids = checked_ids("embedding", ids_any, V);
    std::vector<py::ssize_t> shape(ids_any.shape(), ids_any.shape() + ids_any.ndim());
    shape.push_back(D);
    py::array_t<T> out(shape);
    const T* pw = w.data();
    const std::int64_t* pi = ids.data();
    T* po = out.mutable_data();
    const py::ssize_t R = ids.size();
    py::gil_scoped_release no_gil;
    minidl::embedding(pw, pi, po, R, D);
    return out;
}

py::array embedding(const py::array& weight, const py::array& ids) {
    if (weight.ndim() != 2)
        throw py::value_error("embedding: weight " + shape_str(weight) + " must be 2-D (num_embeddings, dim)");
    const std::string d = dtype_str(weight);
    if (d == "float32") return embedding_typed<float>(weight, ids);
    if (d == "float64") return embedding_typed<double>(weight, ids);
    throw py::type_error("embedding: weight dtype " + d + " is not supported (float32 and float64 are)");
}

template <typename T>
py::array embedding_backward_typed(const py::array& grad_any, const py::array& ids_any, py::ssize_t V) {
    auto g = input<T>("embedding_backward", "grad", grad_any);
    const py::ssize_t D = g.shape(g.ndim() - 1);
    auto ids = checked_ids("embedding_backward", ids_any, V);
    const py::ssize_t R = ids.size();
    if (R * D != g.size())
        throw py::value_error("embedding_backward: grad " + shape_str(grad_any) + " does not match ids " +
                              shape_str(ids_any) + " + (dim,)");
    py::array_t<T> dw({V, D});
    const T* pg = g.data();
    const std::int64_t* pi = ids.data();
    T* pd = dw.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::embedding_backward(pg, pi, pd, R, V, D);
    return dw;
}

py::array embedding_backward(const py::array& grad, const py::array& ids, py::ssize_t V) {
    if (grad.ndim() < 1 || V < 0)
        throw py::value_error("embedding_backward: grad " + shape_str(grad) + " needs a last (dim) axis");
    const std::string d = dtype_str(grad);
    if (d == "float32") return embedding_backward_typed<float>(grad, ids, V);
    if (d == "float64") return embedding_backward_typed<double>(grad, ids, V);
    throw py::type_error("embedding_backward: grad dtype " + d + " is not supported (float32 and float64 are)");
}

// ---------------------------------------------------------------- convolution and pooling

using Pair = std::array<std::int64_t, 2>;

std::int64_t out_size(std::int64_t size, std::int64_t k, std::int64_t s, std::int64_t p, std::int64_t d) {
    return (size + 2 * p - d * (k - 1) - 1) / s + 1;
}

// The geometry of a conv / pool, checked: positive stride, dilation and kernel, padding >= 0,
// a non-empty output.
minidl::ConvShape make_shape(const std::string& op, std::vector<py::ssize_t> xs, std::int64_t O, Pair k,
                             Pair stride, Pair pad, Pair dil, std::int64_t G) {
    if (xs.size() != 4) throw py::value_error(op + ": input must be 4-D (N, C, H, W)");
    if (k[0] < 1 || k[1] < 1 || stride[0] < 1 || stride[1] < 1 || dil[0] < 1 || dil[1] < 1 || pad[0] < 0 ||
        pad[1] < 0 || G < 1)
        throw py::value_error(op + ": kernel, stride, dilation and groups must be >= 1 and padding >= 0");
    minidl::ConvShape s{xs[0], xs[1], xs[2], xs[3], O, k[0], k[1], stride[0], stride[1], pad[0], pad[1],
                        dil[0], dil[1], G, 0, 0};
    s.OH = out_size(s.H, s.kh, s.sh, s.ph, s.dh);
    s.OW = out_size(s.W, s.kw, s.sw, s.pw, s.dw);
    if (s.OH < 1 || s.OW < 1)
        throw py::value_error(op + ": the kernel does not fit the padded input (output would be " +
                              std::to_string(s.OH) + " x " + std::to_string(s.OW) + ")");
    if (s.C % G || O % G)
        throw py::value_error(op + ": channels " + std::to_string(s.C) + " and " + std::to_string(O) +
                              " must both divide by groups=" + std::to_string(G));
    return s;
}

std::string float_dtype(const std::string& op, const py::array& a, const py::array& b) {
    const std::string da = dtype_str(a), db = dtype_str(b);
    if (da != db) throw py::type_error(op + ": dtypes " + da + " and " + db + " differ");
    if (da != "float32" && da != "float64")
        throw py::type_error(op + ": dtype " + da + " is not supported (float32 and float64 are)");
    return da;
}

template <typename T>
py::array conv2d_typed(const py::array& x_any, const py::array& w_any, const minidl::ConvShape& s) {
    auto x = input<T>("conv2d", "x", x_any);
    auto w = input<T>("conv2d", "w", w_any);
    py::array_t<T> out({s.N, s.O, s.OH, s.OW});
    const T *px = x.data(), *pw = w.data();
    T* po = out.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::conv2d(px, pw, po, s);
    return out;
}

void check_weight(const std::string& op, const std::vector<py::ssize_t>& ws, const minidl::ConvShape& s) {
    if (ws.size() != 4 || ws[1] * s.G != s.C)
        throw py::value_error(op + ": weight must be (O, C/groups, kh, kw) with C=" + std::to_string(s.C) +
                              ", groups=" + std::to_string(s.G));
}

py::array conv2d(const py::array& x, const py::array& w, Pair stride, Pair pad, Pair dil, std::int64_t G) {
    if (w.ndim() != 4) throw py::value_error("conv2d: weight " + shape_str(w) + " must be 4-D");
    std::vector<py::ssize_t> xs(x.shape(), x.shape() + x.ndim()), ws(w.shape(), w.shape() + 4);
    auto s = make_shape("conv2d", xs, ws[0], {ws[2], ws[3]}, stride, pad, dil, G);
    check_weight("conv2d", ws, s);
    if (float_dtype("conv2d", x, w) == "float32") return conv2d_typed<float>(x, w, s);
    return conv2d_typed<double>(x, w, s);
}

template <typename T>
py::array conv2d_backward_data_typed(const py::array& g_any, const py::array& w_any, const minidl::ConvShape& s) {
    auto g = input<T>("conv2d_backward_data", "grad", g_any);
    auto w = input<T>("conv2d_backward_data", "w", w_any);
    py::array_t<T> dx({s.N, s.C, s.H, s.W});
    const T *pg = g.data(), *pw = w.data();
    T* pd = dx.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::conv2d_backward_data(pg, pw, pd, s);
    return dx;
}

void check_grad(const std::string& op, const py::array& g, const minidl::ConvShape& s) {
    if (g.ndim() != 4 || g.shape(0) != s.N || g.shape(1) != s.O || g.shape(2) != s.OH || g.shape(3) != s.OW)
        throw py::value_error(op + ": grad " + shape_str(g) + " should be (" + std::to_string(s.N) + ", " +
                              std::to_string(s.O) + ", " + std::to_string(s.OH) + ", " + std::to_string(s.OW) + ")");
}

py::array conv2d_backward_data(const py::array& g, const py::array& w, std::vector<py::ssize_t> x_shape,
                               Pair stride, Pair pad, Pair dil, std::int64_t G) {
    const std::string op = "conv2d_backward_data";
    if (w.ndim() != 4) throw py::value_error(op + ": weight " + shape_str(w) + " must be 4-D");
    std::vector<py::ssize_t> ws(w.shape(), w.shape() + 4);
    auto s = make_shape(op, x_shape, ws[0], {ws[2], ws[3]}, stride, pad, dil, G);
    check_weight(op, ws, s);
    check_grad(op, g, s);
    if (float_dtype(op, g, w) == "float32") return conv2d_backward_data_typed<float>(g, w, s);
    return conv2d_backward_data_typed<double>(g, w, s);
}

template <typename T>
py::array conv2d_backward_weight_typed(const py::array& g_any, const py::array& x_any, const minidl::ConvShape& s,
                                       const std::vector<py::ssize_t>& ws) {
    auto g = input<T>("conv2d_backward_weight", "grad", g_any);
    auto x = input<T>("conv2d_backward_weight", "x", x_any);
    py::array_t<T> dw(ws);
    const T *pg = g.data(), *px = x.data();
    T* pd = dw.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::conv2d_backward_weight(pg, px, pd, s);
    return dw;
}

py::array conv2d_backward_weight(const py::array& g, const py::array& x, std::vector<py::ssize_t> ws,
                                 Pair stride, Pair pad, Pair dil, std::int64_t G) {
    const std::string op = "conv2d_backward_weight";
    if (ws.size() != 4) throw py::value_error(op + ": w_shape must be (O, C/groups, kh, kw)");
    std::vector<py::ssize_t> xs(x.shape(), x.shape() + x.ndim());
    auto s = make_shape(op, xs, ws[0], {ws[2], ws[3]}, stride, pad, dil, G);
    check_weight(op, ws, s);
    check_grad(op, g, s);
    if (float_dtype(op, g, x) == "float32") return conv2d_backward_weight_typed<float>(g, x, s, ws);
    return conv2d_backward_weight_typed<double>(g, x, s, ws);
}

template <typename T>
py::tuple max_pool2d_typed(const py::array& x_any, const minidl::ConvShape& s) {
    auto x = input<T>("max_pool2d", "x", x_any);
    py::array_t<T> out({s.N, s.C, s.OH, s.OW});
    py::array_t<std::int64_t> winner({s.N, s.C, s.OH * s.OW});
    const T* px = x.data();
    T* po = out.mutable_data();
    std::int64_t* pw = winner.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::max_pool2d(px, po, pw, s);
    }
    return py::make_tuple(out, winner);
}

py::tuple max_pool2d(const py::array& x, Pair k, Pair stride, Pair pad, Pair dil) {
    std::vector<py::ssize_t> xs(x.shape(), x.shape() + x.ndim());
    auto s = make_shape("max_pool2d", xs, xs.size() == 4 ? xs[1] : 0, k, stride, pad, dil, 1);
    if (float_dtype("max_pool2d", x, x) == "float32") return max_pool2d_typed<float>(x, s);
    return max_pool2d_typed<double>(x, s);
}

template <typename T>
py::array max_pool2d_backward_typed(const py::array& g_any, const py::array& win_any, const minidl::ConvShape& s) {
    auto g = input<T>("max_pool2d_backward", "grad", g_any);
    auto win = input<std::int64_t>("max_pool2d_backward", "winner", win_any);
    const std::int64_t* pw = win.data();
    for (py::ssize_t i = 0; i < win.size(); ++i)
        if (pw[i] < 0 || pw[i] >= s.kh * s.kw)
            throw py::index_error("max_pool2d_backward: winner " + std::to_string(pw[i]) +
                                  " is not a window offset in [0, kh*kw)");
    py::array_t<T> dx({s.N, s.C, s.H, s.W});
    const T* pg = g.data();
    T* pd = dx.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::max_pool2d_backward(pg, pw, pd, s);
    return dx;
}

py::array max_pool2d_backward(const py::array& g, const py::array& winner, std::vector<py::ssize_t> xs, Pair k,
                              Pair stride, Pair pad, Pair dil) {
    const std::string op = "max_pool2d_backward";
    auto s = make_shape(op, xs, xs.size() == 4 ? xs[1] : 0, k, stride, pad, dil, 1);
    if (g.size() != s.N * s.C * s.OH * s.OW || winner.size() != g.size())
        throw py::value_error(op + ": grad " + shape_str(g) + " / winner " + shape_str(winner) +
                              " do not match the pooled shape");
    if (float_dtype(op, g, g) == "float32") return max_pool2d_backward_typed<float>(g, winner, s);
    return max_pool2d_backward_typed<double>(g, winner, s);
}

template <typename T>
py::array avg_pool2d_typed(const py::array& x_any, const minidl::ConvShape& s) {
    auto x = input<T>("avg_pool2d", "x", x_any);
    py::array_t<T> out({s.N, s.C, s.OH, s.OW});
    const T* px = x.data();
    T* po = out.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::avg_pool2d(px, po, s);
    return out;
}

py::array avg_pool2d(const py::array& x, Pair k, Pair stride, Pair pad) {
    std::vector<py::ssize_t> xs(x.shape(), x.shape() + x.ndim());
    auto s = make_shape("avg_pool2d", xs, xs.size() == 4 ? xs[1] : 0, k, stride, pad, {1, 1}, 1);
    if (float_dtype("avg_pool2d", x, x) == "float32") return avg_pool2d_typed<float>(x, s);
    return avg_pool2d_typed<double>(x, s);
}

template <typename T>
py::array avg_pool2d_backward_typed(const py::array& g_any, const minidl::ConvShape& s) {
    auto g = input<T>("avg_pool2d_backward", "grad", g_any);
    py::array_t<T> dx({s.N, s.C, s.H, s.W});
    const T* pg = g.data();
    T* pd = dx.mutable_data();
    py::gil_scoped_release no_gil;
    minidl::avg_pool2d_backward(pg, pd, s);
    return dx;
}

py::array avg_pool2d_backward(const py::array& g, std::vector<py::ssize_t> xs, Pair k, Pair stride, Pair pad) {
    const std::string op = "avg_pool2d_backward";
    auto s = make_shape(op, xs, xs.size() == 4 ? xs[1] : 0, k, stride, pad, {1, 1}, 1);
    if (g.size() != s.N * s.C * s.OH * s.OW)
        throw py::value_error(op + ": grad " + shape_str(g) + " does not match the pooled shape");
    if (float_dtype(op, g, g) == "float32") return avg_pool2d_backward_typed<float>(g, s);
    return avg_pool2d_backward_typed<double>(g, s);
}

// ---------------------------------------------------------------- batch norm

// x as (N, C, S) and a per-channel vector's check.
void bn_dims(const std::string& op, const py::array& x, py::ssize_t& N, py::ssize_t& C, py::ssize_t& S) {
    if (x.ndim() < 2) throw py::value_error(op + ": x " + shape_str(x) + " needs (N, C, ...) dims");
    N = x.shape(0);
    C = x.shape(1);
    S = 1;
    for (py::ssize_t d = 2; d < x.ndim(); ++d) S *= x.shape(d);
}

template <typename T>
py::array_t<T, py::array::c_style> channel_vec(const std::string& op, const char* what, const py::array& v,
                                               py::ssize_t C) {
    if (v.ndim() != 1 || v.shape(0) != C)
        throw py::value_error(op + ": " + what + " " + shape_str(v) + " should be (" + std::to_string(C) + ",)");
    return input<T>(op, what, v);
}

template <typename T>
py::tuple batch_norm_typed(const py::array& x_any, const py::array& w_any, const py::array& b_any, double eps) {
    const std::string op = "batch_norm";
    py::ssize_t N, C, S;
    bn_dims(op, x_any, N, C, S);
    auto x = input<T>(op, "x", x_any);
    auto w = channel_vec<T>(op, "weight", w_any, C);
    auto b = channel_vec<T>(op, "bias", b_any, C);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> y(shape), mean(C), var(C), invstd(C);
    const T *px = x.data(), *pw = w.data(), *pb = b.data();
    T *py_ = y.mutable_data(), *pm = mean.mutable_data(), *pv = var.mutable_data(), *pi = invstd.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::batch_norm(px, pw, pb, eps, py_, pm, pv, pi, N, C, S);
    }
    return py::make_tuple(y, mean, var, invstd);
}

py::tuple batch_norm(const py::array& x, const py::array& w, const py::array& b, double eps) {
    const std::string d = dtype_str(x);
    if (d == "float32") return batch_norm_typed<float>(x, w, b, eps);
    if (d == "float64") return batch_norm_typed<double>(x, w, b, eps);
    throw py::type_error("batch_norm: dtype " + d + " is not supported (float32 and float64 are)");
}

template <typename T>
py::tuple batch_norm_backward_typed(const py::array& g_any, const py::array& x_any, const py::array& w_any,
                                    const py::array& m_any, const py::array& i_any) {
    const std::string op = "batch_norm_backward";
    py::ssize_t N, C, S;
    bn_dims(op, x_any, N, C, S);
    if (g_any.ndim() != x_any.ndim() || !std::equal(g_any.shape(), g_any.shape() + g_any.ndim(), x_any.shape()))
        throw py::value_error(op + ": grad " + shape_str(g_any) + " does not match x " + shape_str(x_any));
    auto g = input<T>(op, "grad", g_any);
    auto x = input<T>(op, "x", x_any);
    auto w = channel_vec<T>(op, "weight", w_any, C);
    auto m = channel_vec<T>(op, "mean", m_any, C);
    auto is = channel_vec<T>(op, "invstd", i_any, C);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> dx(shape), dw(C), db(C);
    const T *pg = g.data(), *px = x.data(), *pw = w.data(), *pm = m.data(), *pi = is.data();
    T *pdx = dx.mutable_data(), *pdw = dw.mutable_data(), *pdb = db.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::batch_norm_backward(pg, px, pw, pm, pi, pdx, pdw, pdb, N, C, S);
    }
    return py::make_tuple(dx, dw, db);
}

py::tuple batch_norm_backward(const py::array& g, const py::array& x, const py::array& w, const py::array& m,
                              const py::array& is) {
    const std::string d = dtype_str(x);
    if (d == "float32") return batch_norm_backward_typed<float>(g, x, w, m, is);
    if (d == "float64") return batch_norm_backward_typed<double>(g, x, w, m, is);
    throw py::type_error("batch_norm_backward: dtype " + d + " is not supported (float32 and float64 are)");
}

// act: 0 none, 1 ReLU, 2 ReLU6 (minidl::Activation; cpu.py maps the names).
int activation_code(const std::string& op, int act) {
    if (act < minidl::ACT_NONE || act > minidl::ACT_RELU6)
        throw py::value_error(op + ": activation code " + std::to_string(act) + " is not 0 (none), 1 (relu) or 2 (relu6)");
    return act;
}

template <typename T>
py::array channel_affine_typed(const py::array& x_any, const py::array& a_any, const py::array& b_any, int act) {
    const std::string op = "channel_affine";
    py::ssize_t N, C, S;
    bn_dims(op, x_any, N, C, S);
    auto x = input<T>(op, "x", x_any);
    auto a = channel_vec<T>(op, "scale", a_any, C);
    auto b = channel_vec<T>(op, "shift", b_any, C);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> y(shape);
    const T *px = x.data(), *pa = a.data(), *pb = b.data();
    T* py_ = y.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::channel_affine(px, pa, pb, act, py_, N, C, S);
    }
    return y;
}

py::array channel_affine(const py::array& x, const py::array& a, const py::array& b, int act) {
    activation_code("channel_affine", act);
    const std::string d = dtype_str(x);
    if (d == "float32") return channel_affine_typed<float>(x, a, b, act);
    if (d == "float64") return channel_affine_typed<double>(x, a, b, act);
    throw py::type_error("channel_affine: dtype " + d + " is not supported (float32 and float64 are)");
}

template <typename T>
py::tuple channel_affine_backward_typed(const py::array& g_any, const py::array& x_any, const py::array& y_any,
                                        const py::array& a_any, int act) {
    const std::string op = "channel_affine_backward";
    py::ssize_t N, C, S;
    bn_dims(op, x_any, N, C, S);
    for (const auto& [what, arr] : {std::pair<const char*, const py::array&>{"grad", g_any}, {"y", y_any}})
        if (arr.ndim() != x_any.ndim() || !std::equal(arr.shape(), arr.shape() + arr.ndim(), x_any.shape()))
            throw py::value_error(op + ": " + what + " " + shape_str(arr) + " does not match x " + shape_str(x_any));
    auto g = input<T>(op, "grad", g_any);
    auto x = input<T>(op, "x", x_any);
    auto y = input<T>(op, "y", y_any);
    auto a = channel_vec<T>(op, "scale", a_any, C);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> dx(shape), da(C), db(C);
    const T *pg = g.data(), *px = x.data(), *pyv = y.data(), *pa = a.data();
    T *pdx = dx.mutable_data(), *pda = da.mutable_data(), *pdb = db.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::channel_affine_backward(pg, px, pyv, pa, act, pdx, pda, pdb, N, C, S);
    }
    return py::make_tuple(dx, da, db);
}

py::tuple channel_affine_backward(const py::array& g, const py::array& x, const py::array& y, const py::array& a,
                                  int act) {
    activation_code("channel_affine_backward", act);
    const std::string d = dtype_str(x);
    if (d == "float32") return channel_affine_backward_typed<float>(g, x, y, a, act);
    if (d == "float64") return channel_affine_backward_typed<double>(g, x, y, a, act);
    throw py::type_error("channel_affine_backward: dtype " + d + " is not supported (float32 and float64 are)");
}

// ---------------------------------------------------------------- softmax

template <typename T>
py::array softmax_typed(const py::array& x_any, bool log) {
    const std::string op = log ? "log_softmax" : "softmax";
    auto x = input<T>(op, "x", x_any);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> y(shape);
    const py::ssize_t D = shape.back(), R = D ? x.size() / D : 0;
    const T* px = x.data();
    T* py_ = y.mutable_data();
    py::gil_scoped_release no_gil;
    if (D) minidl::softmax(px, py_, R, D, log);
    return y;
}

py::array softmax_last(const py::array& x, bool log) {
    const std::string op = log ? "log_softmax" : "softmax";
    if (x.ndim() < 1) throw py::value_error(op + ": x must have at least one dim (the last axis is reduced)");
    const std::string d = dtype_str(x);
    if (d == "float32") return softmax_typed<float>(x, log);
    if (d == "float64") return softmax_typed<double>(x, log);
    throw py::type_error(op + ": dtype " + d + " is not supported (float32 and float64 are)");
}

// ---------------------------------------------------------------- cross-entropy

// The targets as int64 class indices in [0, D), one per row (checked: the kernels index with them).
py::array_t<std::int64_t, py::array::c_style> class_targets(const std::string& op, const py::array& t_any,
                                                             py::ssize_t R, py::ssize_t D) {
    if (t_any.ndim() != 1 || t_any.shape(0) != R)
        throw py::value_error(op + ": target " + shape_str(t_any) + " should be (" + std::to_string(R) + ",)");
    auto t = input<std::int64_t>(op, "target", t_any);
    const std::int64_t* pt = t.data();
    for (py::ssize_t r = 0; r < R; ++r)
        if (pt[r] < 0 || pt[r] >= D)
            throw py::index_error(op + ": target " + std::to_string(pt[r]) + " is not a class index in [0, " +
                                  std::to_string(D - 1) + "]");
    return t;
}

template <typename T>
py::tuple cross_entropy_typed(const py::array& x_any, const py::array& t_any) {
    const std::string op = "cross_entropy";
    if (x_any.ndim() != 2 || x_any.shape(1) == 0)
        throw py::value_error(op + ": logits " + shape_str(x_any) + " should be (N, C) with C >= 1");
    const py::ssize_t R = x_any.shape(0), D = x_any.shape(1);
    auto x = input<T>(op, "logits", x_any);
    auto t = class_targets(op, t_any, R, D);
    py::array_t<T> loss(R), dlogits({R, D});
    const T* px = x.data();
    const std::int64_t* pt = t.data();
    T *pl = loss.mutable_data(), *pd = dlogits.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::cross_entropy(px, pt, pl, pd, R, D);
    }
    return py::make_tuple(loss, dlogits);
}

py::tuple cross_entropy(const py::array& x, const py::array& t) {
    const std::string d = dtype_str(x);
    if (d == "float32") return cross_entropy_typed<float>(x, t);
    if (d == "float64") return cross_entropy_typed<double>(x, t);
    throw py::type_error("cross_entropy: dtype " + d + " is not supported (float32 and float64 are)");
}

// ---------------------------------------------------------------- relu backward

template <typename T>
py::array relu_backward_typed(const py::array& g_any, const py::array& y_any) {
    const std::string op = "relu_backward";
    auto g = input<T>(op, "grad", g_any);
    auto y = input<T>(op, "y", y_any);
    std::vector<py::ssize_t> shape(y_any.shape(), y_any.shape() + y_any.ndim());
    py::array_t<T> dx(shape);
    const T *pg = g.data(), *py_ = y.data();
    T* pdx = dx.mutable_data();
    const py::ssize_t n = dx.size();
    py::gil_scoped_release no_gil;
    minidl::relu_backward(pg, py_, pdx, n);
    return dx;
}

py::array relu_backward(const py::array& g, const py::array& y) {
    if (g.ndim() != y.ndim() || !std::equal(g.shape(), g.shape() + g.ndim(), y.shape()))
        throw py::value_error("relu_backward: grad " + shape_str(g) + " and y " + shape_str(y) +
                              " must have the same shape");
    const std::string d = dtype_str(y);
    if (d == "float32") return relu_backward_typed<float>(g, y);
    if (d == "float64") return relu_backward_typed<double>(g, y);
    throw py::type_error("relu_backward: dtype " + d + " is not supported (float32 and float64 are)");
}

// ---------------------------------------------------------------- clamp backward

template <typename T>
py::array clamp_backward_typed(const py::array& g_any, const py::array& x_any, double lo, double hi) {
    const std::string op = "clamp_backward";
    auto g = input<T>(op, "grad", g_any);
    auto x = input<T>(op, "x", x_any);
    std::vector<py::ssize_t> shape(x_any.shape(), x_any.shape() + x_any.ndim());
    py::array_t<T> dx(shape);
    const T *pg = g.data(), *px = x.data();
    T* pdx = dx.mutable_data();
    const py::ssize_t n = dx.size();
    py::gil_scoped_release no_gil;
    minidl::clamp_backward(pg, px, pdx, n, static_cast<T>(lo), static_cast<T>(hi));
    return dx;
}

py::array clamp_backward(const py::array& g, const py::array& x, double lo, double hi) {
    if (g.ndim() != x.ndim() || !std::equal(g.shape(), g.shape() + g.ndim(), x.shape()))
        throw py::value_error("clamp_backward: grad " + shape_str(g) + " and x " + shape_str(x) +
                              " must have the same shape");
    const std::string d = dtype_str(x);
    if (d == "float32") return clamp_backward_typed<float>(g, x, lo, hi);
    if (d == "float64") return clamp_backward_typed<double>(g, x, lo, hi);
    throw py::type_error("clamp_backward: dtype " + d + " is not supported (float32 and float64 are)");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "minidl's hand-written C++ kernels (csrc/cpu). Use them through minidl.backend.cpu.";

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"),
          "a @ b for float32/float64: (M, K) @ (K, N) -> (M, N) or (B, M, K) @ (B, K, N) -> "
          "(B, M, N). Inputs with any strides (transposed views) are read in place; batch dims are "
          "not broadcast.");

    m.def("sgd_step", &sgd_step, py::arg("param"), py::arg("grad"), py::arg("momentum_buf"), py::arg("lr"),
          py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("dampening"),
          "Fused SGD step in place (numpy_ref.sgd_step's semantics); param and momentum_buf must be "
          "C-contiguous. Returns the momentum buffer (new on the first step, None if momentum == 0).");
    m.def("adam_step", &adam_step, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
          py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("decoupled"),
          "Fused Adam/AdamW step in place (numpy_ref.adam_step); param and state must be C-contiguous.");
    m.def("embedding", &embedding, py::arg("weight"), py::arg("ids"), "weight[ids] for a 2-D float table.");
    m.def("embedding_backward", &embedding_backward, py::arg("grad"), py::arg("ids"),
          py::arg("num_embeddings"), "Scatter-add grad rows into a zeroed (num_embeddings, dim) table.");

    m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), "NCHW convolution (numpy_ref.conv2d).");
    m.def("conv2d_backward_data", &conv2d_backward_data, py::arg("grad"), py::arg("w"), py::arg("x_shape"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), "dL/dx of conv2d.");
    m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("grad"), py::arg("x"), py::arg("w_shape"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), "dL/dw of conv2d.");
    m.def("max_pool2d", &max_pool2d, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), "(out, winner): max pooling and each window's winning offset i*kw + j.");
    m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad"), py::arg("winner"), py::arg("x_shape"),
          py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), "dL/dx of max_pool2d.");
    m.def("avg_pool2d", &avg_pool2d, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
          "Average pooling, padding counted as zeros.");
    m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad"), py::arg("x_shape"), py::arg("kernel"),
          py::arg("stride"), py::arg("padding"), "dL/dx of avg_pool2d.");

    m.def("batch_norm", &batch_norm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
          "(y, mean, var, invstd): batch norm over channel axis 1 with the batch's statistics.");
    m.def("batch_norm_backward", &batch_norm_backward, py::arg("grad"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("invstd"), "(dx, dweight, dbias) of batch_norm.");
    m.def("channel_affine", &channel_affine, py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("act"),
          "act(x * scale[c] + shift[c]) over channel axis 1 (batch norm in eval mode + its activation); "
          "act 0 none, 1 relu, 2 relu6.");
    m.def("channel_affine_backward", &channel_affine_backward, py::arg("grad"), py::arg("x"), py::arg("y"),
          py::arg("scale"), py::arg("act"), "(dx, dscale, dshift) of channel_affine, y its output.");

    m.def("softmax", [](const py::array& x) { return softmax_last(x, false); }, py::arg("x"),
          "Softmax over the last axis.");
    m.def("log_softmax", [](const py::array& x) { return softmax_last(x, true); }, py::arg("x"),
          "Log-softmax over the last axis.");
    m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("target"),
          "(loss, dlogits): loss[r] = logsumexp(logits[r]) - logits[r, target[r]] and its gradient "
          "softmax(logits[r]) - onehot(target[r]).");
    m.def("relu_backward", &relu_backward, py::arg("grad"), py::arg("y"), "grad where y > 0, else 0.");
    m.def("clamp_backward", &clamp_backward, py::arg("grad"), py::arg("x"), py::arg("lo"), py::arg("hi"),
          "grad where lo <= x <= hi, else 0 (lo = -inf / hi = inf for no bound).");

#ifdef _OPENMP
    m.attr("has_openmp") = true;
#else
    m.attr("has_openmp") = false;  // then the kernels run on one thread whatever is set
#endif
    pthread_atfork(nullptr, nullptr, [] { minidl::g_in_forked_child = true; });  // see kernels.h
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
        minidl::g_num_threads = n;
    }, py::arg("n"), "Set the number of threads the C++ kernels use (process-wide).");
    m.def("keep_freed_memory", []() {
#if defined(__GLIBC__)
        // glibc serves every block over M_MMAP_THRESHOLD (128 KiB to start with, 32 MiB at
        // most) with a fresh mmap, and hands freed heap memory back to the OS once more than
        // M_TRIM_THRESHOLD of it is free at the top.  Either way the next array of that
        // size starts on fresh pages: a page fault and a zeroed 4 KiB per page touched.
        // A training step allocates and frees the same activations every step -- which then
        // costs more than the kernel that fills them (ReLU on 2 MB: 1.1 ms against 0.23 ms
        // in reused memory; EfficientNet-Lite0 at 224 px, batch 32, with activations of up to
        // 154 MB: 2.5-3.0 s a step against 1.9 s).  Serve every block from the heap (no
        // mmap at all: the 32 MiB limit of M_MMAP_THRESHOLD is below those activations) and
        // keep freed memory for the next step, as a GPU framework's caching allocator does.
        // The price: the process keeps its peak heap.
        const bool ok = mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, 1 << 30) && mallopt(M_TOP_PAD, 64 << 20);
        return ok;
#else
        return false;  // another C library: left as it is
#endif
    }, "Make malloc keep freed memory for reuse instead of returning it to the OS (glibc: "
       "mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB, M_TOP_PAD = 64 MiB), so that "
       "the arrays of each training step reuse the pages of the last one's instead of faulting "
       "in fresh ones. Process-wide. Returns whether the settings took.");
    m.def("get_num_threads", []() { return minidl::num_threads(); },
          "The number of threads the C++ kernels use (OMP_NUM_THREADS or the core count "
          "unless set_num_threads was called; 1 in a forked child process).");
}
