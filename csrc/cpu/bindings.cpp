// csrc/cpu/bindings.cpp — the Python module minidl._C: every kernel of csrc/cpu, one line each.
//
// A thin border, on purpose.  minidl/backend/cpu.py is where a kernel's arguments are checked
// (shapes and sizes, the dtypes and layouts it takes; errors that name the op, the shapes and
// the fix), where whatever a kernel does not take falls back to numpy_ref, and where outputs
// are allocated.  This file passes arrays and numbers through:
//
//   * a kernel's line (MINIDL_KERNEL, at the bottom) declares it, with its C++ parameters (T the
//     float type), and binds it to Python under its name with the parameters in that order;
//   * call<>() picks the float32 or float64 instantiation from the kernel's first array, and
//     Param<P> turns each Python argument into what its parameter type P asks for:
//       const T*             an input array of dtype T, read C-contiguous (copied if it is not)
//       T*                   an output, or an array updated in place, of dtype T: C-contiguous
//                            and writable, else an error (a copy would be written instead);
//                            None is a null pointer (sgd_step's momentum buffer at momentum 0)
//       const index_t*       an input array of int64 (index_t*: an output)
//       Matrix<const T>      a 2-D or 3-D array of dtype T, read in place through its strides
//       const ConvGeometry&  a minidl.backend.kernel_types.ConvGeometry (16 ints)
//       T, double, index_t, long, int, bool      a number
//   * and the GIL is released while the kernel runs, so that other Python threads (a data
//     loader, say) keep going.
//
// Sizes are not checked here: call these functions through minidl.backend.cpu.  A kernel that
// indexes memory with its data (embedding's ids, cross_entropy's targets, max pooling's
// winners) checks those values itself and throws std::out_of_range: an IndexError in Python.
//
// The checks here cost no more than the kernel's dtype needs: the dtype is compared by numpy's
// descriptor, not by name (numpy's dtype.__str__ costs ~10 us, more than a small kernel, and
// the optimizer makes one call per parameter per step).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pthread.h>

#include <cctype>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels.h"

namespace py = pybind11;
using minidl::ConvGeometry;
using minidl::index_t;
using minidl::Matrix;

namespace {

// ------------------------------------------------------------------ a kernel as Python sees it

struct KernelInfo {
    std::string name;                 // "relu_backward"
    std::string signature;            // "(const T* grad, const T* y, T* out, index_t n)"
    std::vector<std::string> params;  // "grad", "y", "out", "n"
};

// The parameter names of a signature: the last word of each comma-separated part.
std::vector<std::string> param_names(const std::string& signature) {
    std::vector<std::string> names;
    std::string word;
    bool in_word = false;
    for (char ch : signature) {
        const bool part = std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
        if (part && !in_word) word.clear();
        if (part) word += ch;
        in_word = part;
        if ((ch == ',' || ch == ')') && !word.empty()) names.push_back(word), word.clear();
    }
    return names;
}

// One call: the kernel, the Python arguments, the index of the array that picked T.
struct Call {
    const KernelInfo& info;
    const py::args& args;
    std::size_t first;
    py::handle arg(std::size_t i) const { return PyTuple_GET_ITEM(args.ptr(), static_cast<Py_ssize_t>(i)); }
    std::string where(std::size_t i) const { return info.name + ": " + info.params[i]; }  // "conv2d: w"
};

// "(3, 4)", as Python prints a shape.
std::string shape_str(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < x.ndim(); ++d) s += (d ? ", " : "") + std::to_string(x.shape(d));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

std::string dtype_str(const py::array& x) { return py::str(x.dtype()); }

std::string type_name(py::handle h) { return Py_TYPE(h.ptr())->tp_name; }

// Whether x's dtype is T's (float32, float64, int64): numpy's own descriptor for T, or one equal to it.
template <typename T>
bool has_dtype(const py::array& x) {
    static PyObject* const descr = py::dtype::of<T>().release().ptr();
    PyObject* d = reinterpret_cast<PyObject*>(py::detail::array_proxy(x.ptr())->descr);
    return d == descr || py::detail::npy_api::get().PyArray_EquivTypes_(d, descr);
}

py::array as_array(const Call& c, std::size_t i) {
    const py::handle h = c.arg(i);
    if (!py::isinstance<py::array>(h))
        throw py::type_error(c.where(i) + " must be a numpy array, not " + type_name(h));
    return py::reinterpret_borrow<py::array>(h);
}

// An array read by a kernel whose dtype is not the one the first array picked.
template <typename T>
[[noreturn]] void wrong_input_dtype(const Call& c, std::size_t i, const py::array& x) {
    if (std::is_integral_v<T>)
        throw py::type_error(c.where(i) + " has dtype " + dtype_str(x) + ", expected int64 (cast it first)");
    const std::string want = dtype_str(as_array(c, c.first)), got = dtype_str(x);
    throw py::type_error(c.info.name + ": dtypes " + want + " and " + got + " differ (" + c.info.params[c.first] +
                         " is " + want + ", " + c.info.params[i] + " " + got + "): cast one, e.g. " +
                         c.info.params[i] + ".astype(" + c.info.params[c.first] + ".dtype)");
}

// A C-contiguous copy of x (of dtype T), for a kernel that cannot read x's layout.
template <typename T>
py::array contiguous_copy(const Call& c, std::size_t i, const py::array& x) {
    py::array copy = py::array_t<T, py::array::c_style>::ensure(x);
    if (!copy) throw std::runtime_error(c.where(i) + ": could not make a C-contiguous copy");
    return copy;
}

// ------------------------------------------------------------------ Python argument -> kernel parameter

template <typename P>
struct Param {  // a number
    P value;
    Param(const Call& c, std::size_t i) {
        py::detail::make_caster<P> caster;
        if (!caster.load(c.arg(i), true))
            throw py::type_error(c.where(i) + " must be a number, not " + type_name(c.arg(i)));
        value = py::detail::cast_op<P>(caster);
    }
};

template <typename T>
struct Param<const T*> {  // an input array of dtype T
    py::array array;
    const T* value;
    Param(const Call& c, std::size_t i) : array(as_array(c, i)) {
        if (!has_dtype<T>(array)) wrong_input_dtype<T>(c, i, array);
        if (!(array.flags() & py::array::c_style)) array = contiguous_copy<T>(c, i, array);
        value = static_cast<const T*>(array.data());
    }
};

template <typename T>
struct Param<T*> {  // an output, or an array updated in place, of dtype T (None: a null pointer)
    T* value = nullptr;
    Param(const Call& c, std::size_t i) {
        if (c.arg(i).is_none()) return;
        py::array x = as_array(c, i);
        if (!has_dtype<T>(x))
            throw py::type_error(c.where(i) + " has dtype " + dtype_str(x) + ", expected " +
                                 dtype_str(py::dtype::of<T>()) + " (it is written in place)");
        if (!(x.flags() & py::array::c_style))
            throw py::value_error(c.where(i) + " " + shape_str(x) + " must be C-contiguous (it is written in place); "
                                  "minidl.backend.cpu falls back to numpy for other layouts");
        if (!x.writeable()) throw py::value_error(c.where(i) + " is read-only (it is written in place)");
        value = static_cast<T*>(x.mutable_data());
    }
};

template <typename T>
struct Param<Matrix<const T>> {  // a 2-D or 3-D array read in place through its strides
    py::array array;
    Matrix<const T> value;
    Param(const Call& c, std::size_t i) : array(as_array(c, i)) {
        if (!has_dtype<T>(array)) wrong_input_dtype<T>(c, i, array);
        const py::ssize_t nd = array.ndim();
        if (nd != 2 && nd != 3)
            throw py::value_error(c.where(i) + " " + shape_str(array) + " must be 2-D (rows, cols) or 3-D (batch, rows, cols)");
        if (!whole_elements(array)) array = contiguous_copy<T>(c, i, array);  // strides in bytes: copy
        const auto stride = [&](py::ssize_t d) { return index_t(array.strides(d) / py::ssize_t(sizeof(T))); };
        value = {static_cast<const T*>(array.data()), nd == 3 ? index_t(array.shape(0)) : 1, index_t(array.shape(nd - 2)),
                 index_t(array.shape(nd - 1)), {nd == 3 ? stride(0) : 0, stride(nd - 2), stride(nd - 1)}};
    }
    static bool whole_elements(const py::array& x) {
        for (py::ssize_t d = 0; d < x.ndim(); ++d)
            if (x.strides(d) % py::ssize_t(sizeof(T))) return false;
        return true;
    }
};

template <>
struct Param<const ConvGeometry&> {  // kernel_types.ConvGeometry, a tuple of 16 ints in the record's order
    ConvGeometry value;
    Param(const Call& c, std::size_t i) : value(from_tuple(c, i, std::make_index_sequence<kFields>{})) {}

    static constexpr std::size_t kFields = sizeof(ConvGeometry) / sizeof(index_t);
    template <std::size_t... F>
    static ConvGeometry from_tuple(const Call& c, std::size_t i, std::index_sequence<F...>) {
        PyObject* t = c.arg(i).ptr();
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != Py_ssize_t(kFields))
            throw py::type_error(c.where(i) + " must be a minidl.backend.kernel_types.ConvGeometry (" +
                                 std::to_string(kFields) + " ints)");
        return ConvGeometry{field(PyTuple_GET_ITEM(t, F))...};  // (braces: evaluated in order)
    }
    static index_t field(PyObject* v) {
        const long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
        return index_t(x);
    }
};

// ------------------------------------------------------------------ the dtype dispatch

// Whether parameter type P passes an array of T (the arrays that pick the instantiation).
template <typename T, typename P>
constexpr bool is_array_of =
    std::is_same_v<P, const T*> || std::is_same_v<P, T*> || std::is_same_v<P, Matrix<const T>>;

template <typename F>
struct Kernel;
template <typename... P>
struct Kernel<void (*)(P...)> {
    static constexpr std::size_t arity = sizeof...(P);
    // The index of the first parameter that passes an array of float (arity if none).
    static constexpr std::size_t first_array() {
        constexpr bool arrays[] = {is_array_of<float, P>..., false};
        for (std::size_t i = 0; i < arity; ++i)
            if (arrays[i]) return i;
        return arity;
    }
    template <std::size_t... I>
    static py::object run(void (*kernel)(P...), const Call& c, std::index_sequence<I...>) {
        std::tuple<Param<P>...> params{Param<P>(c, I)...};  // (braces: converted in order)
        {
            py::gil_scoped_release no_gil;
            kernel(std::get<I>(params).value...);
        }
        return py::none();
    }
};

// Calls kernel F32 or F64 (the float and double instantiations of one kernel) on Python's args.
template <auto F32, auto F64>
py::object call(const KernelInfo& info, const py::args& args) {
    using K = Kernel<decltype(F32)>;
    constexpr std::size_t first = K::first_array();
    static_assert(first < K::arity, "a kernel needs an array of T: its first one picks float32 or float64");
    if (args.size() != K::arity) {
        std::string names;
        for (const std::string& p : info.params) names += (names.empty() ? "" : ", ") + p;
        throw py::type_error(info.name + " takes " + std::to_string(K::arity) + " arguments (" + names + "), got " +
                             std::to_string(args.size()));
    }
    const Call c{info, args, first};
    const py::array x = as_array(c, first);
    if (has_dtype<float>(x)) return K::run(F32, c, std::make_index_sequence<K::arity>{});
    if (has_dtype<double>(x)) return Kernel<decltype(F64)>::run(F64, c, std::make_index_sequence<K::arity>{});
    throw py::type_error(info.name + ": dtype " + dtype_str(x) + " is not supported (float32 and float64 are)");
}

// ------------------------------------------------------------------ the list of kernels

struct Binding {
    KernelInfo info;
    py::object (*call)(const KernelInfo&, const py::args&);
    std::string doc;
};

// Every MINIDL_KERNEL line below adds its kernel here (C++ runs them in order, before the
// module is imported); PYBIND11_MODULE then defines one Python function per entry.
std::vector<Binding>& bindings() {
    static std::vector<Binding> all;
    return all;
}

template <auto F32, auto F64>
bool add_kernel(const char* name, const char* signature, const char* doc) {
    bindings().push_back({{name, signature, param_names(signature)}, &call<F32, F64>, doc});
    return true;
}

}  // namespace

// MINIDL_KERNEL(name, (parameters), doc): declares minidl::name<T> (defined, and compiled for
// float and double, in its .cpp file: MINIDL_FLOAT_KERNEL) and binds it as minidl._C.name.
#define MINIDL_KERNEL(NAME, PARAMS, DOC)                                                                   \
    namespace minidl {                                                                                     \
    template <typename T>                                                                                  \
    void NAME PARAMS;                                                                                      \
    template <typename T>                                                                                  \
    using NAME##_kernel = void(*) PARAMS;                                                                  \
    }                                                                                                      \
    static const bool NAME##_bound =                                                                       \
        add_kernel<static_cast<minidl::NAME##_kernel<float>>(&minidl::NAME<float>),                        \
                   static_cast<minidl::NAME##_kernel<double>>(&minidl::NAME<double>)>(#NAME, #PARAMS, DOC)

// ------------------------------------------------------------------ the kernels, one line each

MINIDL_KERNEL(matmul, (Matrix<const T> a, Matrix<const T> b, T* out),
              "out (B, M, N) = a (B, M, K) @ b (B, K, N); 2-D operands have B = 1; a and b are read "
              "through their strides (matmul.cpp)");

MINIDL_KERNEL(sgd_step, (T* param, const T* grad, T* momentum_buf, index_t n, double lr, double momentum,
                         double weight_decay, double dampening, bool nesterov, bool first),
              "numpy_ref.sgd_step in one pass, in place; momentum_buf None when momentum == 0, "
              "first: the step that fills it (optim.cpp)");
MINIDL_KERNEL(adam_step, (T* param, const T* grad, T* exp_avg, T* exp_avg_sq, index_t n, long step, double lr,
                          double beta1, double beta2, double eps, double weight_decay, bool decoupled),
              "numpy_ref.adam_step (Adam, AdamW when decoupled) in one pass, in place (optim.cpp)");

MINIDL_KERNEL(embedding, (const T* weight, const index_t* ids, T* out, index_t rows, index_t num_embeddings,
                          index_t dim),
              "out[r] = weight[ids[r]] for rows ids in [-num_embeddings, num_embeddings) (embedding.cpp)");
MINIDL_KERNEL(embedding_backward, (const T* grad, const index_t* ids, T* dweight, index_t rows,
                                   index_t num_embeddings, index_t dim),
              "dweight = 0, then dweight[ids[r]] += grad[r] in order of r (embedding.cpp)");

MINIDL_KERNEL(conv2d, (const T* x, const T* w, T* out, const ConvGeometry& geometry),
              "out (N, O, OH, OW) = conv2d(x, w) (conv.cpp; depthwise.cpp for groups == C == O)");
MINIDL_KERNEL(conv2d_backward_data, (const T* grad, const T* w, T* dx, const ConvGeometry& geometry),
              "dx (N, C, H, W) of conv2d (conv.cpp, depthwise.cpp)");
MINIDL_KERNEL(conv2d_backward_weight, (const T* grad, const T* x, T* dw, const ConvGeometry& geometry),
              "dw (O, C/groups, kh, kw) of conv2d (conv.cpp, depthwise.cpp)");
MINIDL_KERNEL(max_pool2d, (const T* x, T* out, index_t* winner, const ConvGeometry& geometry),
              "out (N, C, OH, OW): each window's max; winner (N, C, OH*OW): its offset i*kw + j (pool.cpp)");
MINIDL_KERNEL(max_pool2d_backward, (const T* grad, const index_t* winner, T* dx, const ConvGeometry& geometry),
              "dx (N, C, H, W): each output's gradient added where its winner was (pool.cpp)");
MINIDL_KERNEL(avg_pool2d, (const T* x, T* out, const ConvGeometry& geometry),
              "out (N, C, OH, OW): each window's mean, padding counted as zeros (pool.cpp)");
MINIDL_KERNEL(avg_pool2d_backward, (const T* grad, T* dx, const ConvGeometry& geometry),
              "dx (N, C, H, W) of avg_pool2d (pool.cpp)");

MINIDL_KERNEL(upsample_nearest2d, (const T* x, T* out, const index_t* rows, const index_t* cols, index_t planes,
                                   index_t H, index_t W, index_t h, index_t w),
              "out (planes, h, w)[p, i, j] = x (planes, H, W)[p, rows[i], cols[j]] (resize.cpp)");
MINIDL_KERNEL(upsample_nearest2d_backward, (const T* grad, T* dx, const index_t* rows, const index_t* cols,
                                            index_t planes, index_t H, index_t W, index_t h, index_t w),
              "dx (planes, H, W) of upsample_nearest2d: each gradient added where its output was read (resize.cpp)");
MINIDL_KERNEL(upsample_bilinear2d, (const T* x, T* out, const index_t* rows, const T* row_weights,
                                    const index_t* cols, const T* col_weights, index_t planes, index_t H, index_t W,
                                    index_t h, index_t w),
              "out (planes, h, w): x (planes, H, W) interpolated between columns cols = [x0; x1] (2, w), then "
              "rows = [y0; y1] (2, h), with weights (1 - w, w) (resize.cpp)");
MINIDL_KERNEL(upsample_bilinear2d_backward, (const T* grad, T* dx, const index_t* rows, const T* row_weights,
                                             const index_t* cols, const T* col_weights, index_t planes, index_t H,
                                             index_t W, index_t h, index_t w),
              "dx (planes, H, W) of upsample_bilinear2d: the weights transposed (resize.cpp)");

MINIDL_KERNEL(batch_norm, (const T* x, const T* weight, const T* bias, double eps, T* y, T* mean, T* var,
                           T* invstd, index_t N, index_t C, index_t S),
              "batch norm of x (N, C, S) with the batch's statistics per channel (batchnorm.cpp)");
MINIDL_KERNEL(batch_norm_backward, (const T* grad, const T* x, const T* weight, const T* mean, const T* invstd,
                                    T* dx, T* dweight, T* dbias, index_t N, index_t C, index_t S),
              "dx, dweight, dbias of batch_norm (batchnorm.cpp)");
MINIDL_KERNEL(channel_affine, (const T* x, const T* scale, const T* shift, int act, T* y, index_t N, index_t C,
                               index_t S),
              "y = act(x * scale[c] + shift[c]) over x (N, C, S): batch norm in eval mode and its "
              "activation (act: csrc/common/activation.h) in one pass (batchnorm.cpp)");
MINIDL_KERNEL(channel_affine_backward, (const T* grad, const T* x, const T* y, const T* scale, int act, T* dx,
                                        T* dscale, T* dshift, index_t N, index_t C, index_t S),
              "dx, dscale, dshift of channel_affine, y its output (batchnorm.cpp)");

MINIDL_KERNEL(softmax, (const T* x, T* y, index_t rows, index_t dim, bool log),
              "softmax (log-softmax when log) over the rows of x (rows, dim) (softmax.cpp)");
MINIDL_KERNEL(cross_entropy, (const T* logits, const index_t* target, T* loss, T* dlogits, index_t rows,
                              index_t classes),
              "loss[r] = logsumexp(logits[r]) - logits[r, target[r]] and dlogits = softmax - onehot "
              "(softmax.cpp)");

MINIDL_KERNEL(lstm_forward, (const T* x, const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* bias, T* hs,
                             T* cs, T* gates, index_t steps, index_t batch, index_t input_size, index_t hidden_size),
              "one LSTM layer over x (T, B, I): hs, cs (T+1, B, H) the states h_0..h_T, c_0..c_T, gates (T, B, 4H) "
              "the activated i, f, g, o of each step (lstm.cpp)");
MINIDL_KERNEL(lstm_backward, (const T* d_out, const T* d_cT, const T* x, const T* w_ih, const T* w_hh, const T* hs,
                              const T* cs, const T* gates, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias,
                              index_t steps, index_t batch, index_t input_size, index_t hidden_size),
              "backpropagation through time of lstm_forward, from d_out (T, B, H) and d_cT (B, H) (lstm.cpp)");

MINIDL_KERNEL(relu_backward, (const T* grad, const T* y, T* dx, index_t n),
              "dx = grad where y > 0, else 0 (elementwise.cpp)");
MINIDL_KERNEL(clamp_backward, (const T* grad, const T* x, T* dx, index_t n, T lo, T hi),
              "dx = grad where lo <= x <= hi, else 0 (elementwise.cpp)");
MINIDL_KERNEL(dropout_mask, (T* out, index_t n, std::uint64_t seed, T p, T scale),
              "out[i] = scale where SplitMix64's uniform number for (seed, i) is >= p, else 0 (elementwise.cpp)");

// ------------------------------------------------------------------ the module

void bind_matmul_steps(py::module_& m);  // bind_matmul_steps.cpp: matmul, step by step (a lesson, not a kernel)

PYBIND11_MODULE(_C, m) {
    m.doc() = "minidl's hand-written C++ kernels (csrc/cpu), as raw as they come: they check dtypes and "
              "layouts, not sizes. Call them through minidl.backend.cpu.";
    py::options options;
    options.disable_function_signatures();  // each docstring starts with its own: name(parameters)
    for (const Binding& b : bindings()) {
        const Binding* k = &b;  // (the list no longer changes)
        std::string params;
        for (const std::string& p : k->info.params) params += (params.empty() ? "" : ", ") + p;
        const std::string doc = k->info.name + "(" + params + ")\n\n" + k->doc + ".\n\nC++: void " + k->info.name +
                                k->info.signature + ", T = float (float32) or double (float64).";
        m.def(k->info.name.c_str(), [k](const py::args& args) { return k->call(k->info, args); }, doc.c_str());
    }

#ifdef _OPENMP
    m.attr("has_openmp") = true;
#else
    m.attr("has_openmp") = false;  // then the kernels run on one thread whatever is set
#endif
    pthread_atfork(nullptr, nullptr, [] { minidl::g_in_forked_child = true; });  // see kernels.h
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
        minidl::g_num_threads = n;
    }, py::arg("n"), "set_num_threads(n)\n\nSet the number of threads the C++ kernels use (process-wide).");
    m.def("get_num_threads", []() { return minidl::num_threads(); },
          "get_num_threads()\n\nThe number of threads the C++ kernels use (OMP_NUM_THREADS or the core count "
          "unless set_num_threads was called; 1 in a forked child process).");
    m.def("keep_freed_memory", &minidl::keep_freed_memory,
          "keep_freed_memory()\n\nMake malloc keep freed memory for reuse instead of returning it to the OS "
          "(glibc: mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB, M_TOP_PAD = 64 MiB), so that the arrays "
          "of each training step reuse the pages of the last one's instead of faulting in fresh ones. "
          "Process-wide. Returns whether the settings took (malloc_tuning.cpp).");
    bind_matmul_steps(m);
}
