// csrc/cpu/bindings.cpp — the Python module minidl._C (pybind11).
//
// The kernels in this folder take raw C-contiguous buffers; this file is the border:
// it checks shapes and dtypes (with errors that name the op, the shapes and the fix),
// allocates outputs, and releases the GIL while a kernel runs so other Python
// threads (a data loader, say) keep going.  minidl/backend/cpu.py wraps these
// functions with numpy semantics (broadcasting, any strides).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pthread.h>

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

template <typename T>
py::array matmul_typed(const py::array& a_any, const py::array& b_any) {
    // A C-contiguous view of each input, copied only if it is not contiguous already.
    auto a = py::array_t<T, py::array::c_style>::ensure(a_any);
    auto b = py::array_t<T, py::array::c_style>::ensure(b_any);
    if (!a || !b) throw std::runtime_error("matmul: could not make C-contiguous copies of the inputs");
    const bool batched = a.ndim() == 3;
    const py::ssize_t batch = batched ? a.shape(0) : 1;
    const py::ssize_t M = a.shape(a.ndim() - 2), K = a.shape(a.ndim() - 1), N = b.shape(b.ndim() - 1);

    std::vector<py::ssize_t> shape{M, N};
    if (batched) shape.insert(shape.begin(), batch);
    py::array_t<T> c(shape);
    const T* pa = a.data();
    const T* pb = b.data();
    T* pc = c.mutable_data();
    {
        py::gil_scoped_release no_gil;
        minidl::matmul(pa, pb, pc, batch, M, N, K);
    }
    return c;
}

py::array matmul(const py::array& a, const py::array& b) {
    const std::string where = "matmul: " + shape_str(a) + " @ " + shape_str(b) + ": ";
    if (!((a.ndim() == 2 && b.ndim() == 2) || (a.ndim() == 3 && b.ndim() == 3)))
        throw py::value_error(where + "expects two 2-D (M, K) @ (K, N) or two 3-D (B, M, K) @ "
                                      "(B, K, N) arrays; minidl.backend.cpu.matmul handles other "
                                      "ranks and broadcasting");
    if (a.ndim() == 3 && a.shape(0) != b.shape(0))
        throw py::value_error(where + "batch sizes " + std::to_string(a.shape(0)) + " and " +
                              std::to_string(b.shape(0)) +
                              " differ (this kernel does not broadcast; "
                              "minidl.backend.cpu.matmul does)");
    const py::ssize_t ka = a.shape(a.ndim() - 1), kb = b.shape(b.ndim() - 2);
    if (ka != kb)
        throw py::value_error(where + "inner dims " + std::to_string(ka) + " and " +
                              std::to_string(kb) + " differ");

    const std::string da = py::str(a.dtype()), db = py::str(b.dtype());
    if (da != db)
        throw py::type_error(where + "dtypes " + da + " and " + db +
                             " differ: cast one operand, e.g. b.astype(a.dtype)");
    if (da == "float32") return matmul_typed<float>(a, b);
    if (da == "float64") return matmul_typed<double>(a, b);
    throw py::type_error(where + "dtype " + da +
                         " is not supported by the C++ kernel (float32 and float64 are); "
                         "use numpy.matmul for other dtypes");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "minidl's hand-written C++ kernels (csrc/cpu). Use them through minidl.backend.cpu.";

    m.def("matmul", &matmul, py::arg("a"), py::arg("b"),
          "a @ b for float32/float64: (M, K) @ (K, N) -> (M, N) or (B, M, K) @ (B, K, N) -> "
          "(B, M, N). Non-contiguous inputs are copied; batch dims are not broadcast.");

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
    m.def("get_num_threads", []() { return minidl::num_threads(); },
          "The number of threads the C++ kernels use (OMP_NUM_THREADS or the core count "
          "unless set_num_threads was called; 1 in a forked child process).");
}
