// csrc/cpu/bind_matmul_steps.cpp — _C.matmul_step(version, a, b) and _C.MATMUL_STEPS: the steps of
// matmul_steps.cpp, for their test and the benchmark's table (not a kernel minidl's ops call).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "kernels.h"

namespace py = pybind11;

namespace minidl::steps {
void v0_naive(const float*, const float*, float*, index_t, index_t, index_t);
void v1_loop_order(const float*, const float*, float*, index_t, index_t, index_t);
void v2_cache_blocks(const float*, const float*, float*, index_t, index_t, index_t);
void v3_register_tile(const float*, const float*, float*, index_t, index_t, index_t);
void v4_minidl(const float*, const float*, float*, index_t, index_t, index_t);
}  // namespace minidl::steps

void bind_matmul_steps(py::module_& m) {
    using Step = void (*)(const float*, const float*, float*, minidl::index_t, minidl::index_t, minidl::index_t);
    static const Step steps[] = {minidl::steps::v0_naive, minidl::steps::v1_loop_order,
                                 minidl::steps::v2_cache_blocks, minidl::steps::v3_register_tile,
                                 minidl::steps::v4_minidl};
    m.attr("MATMUL_STEPS") = py::make_tuple("v0 naive", "v1 loop order", "v2 cache blocks", "v3 register tile",
                                            "v4 minidl");
    using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
    m.def("matmul_step", [](int version, Array a, Array b) {
        if (version < 0 || version > 4) throw py::value_error("matmul_step: version is 0 .. 4, got " + std::to_string(version));
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(0))
            throw py::value_error("matmul_step: needs (M, K) @ (K, N) float32 matrices");
        const auto M = a.shape(0), K = a.shape(1), N = b.shape(1);
        Array c({M, N});
        {
            py::gil_scoped_release unlocked;
            steps[version](a.data(), b.data(), c.mutable_data(), M, N, K);
        }
        return c;
    }, py::arg("version"), py::arg("a"), py::arg("b"),
       "C = a @ b by step `version` of csrc/cpu/matmul_steps.cpp (0 naive ... 4 minidl's kernel), one thread "
       "for 0-3");
}
