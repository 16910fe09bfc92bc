// cuda_emu.h: run the unmodified CUDA kernels of csrc/cuda on the CPU, for machines without a GPU.
//
// minidl/backend/emu.py compiles one .cu file with g++ against this header and loads
// it with ctypes. The CUDA model maps onto threads like this:
//
//   * `__global__` kernels become plain C++ functions; `threadIdx`, `blockIdx` are
//     thread_local variables, `blockDim`, `gridDim` one value per launch.
//   * A launch runs the blocks one after another. The threads of a block are real
//     std::threads, so `__syncthreads()` is a real barrier: a missing one is a real
//     race, which ThreadSanitizer reports (MINIDL_EMU_SANITIZE=thread, see emu.py), and
//     a divergent one is an error here, where a GPU would hang or silently misbehave.
//   * `__shared__` arrays become `static`: one copy, which is right because only one
//     block runs at a time. `extern __shared__ T name[];` (dynamic shared memory) is
//     the one line emu.py rewrites, into a pointer to a buffer of the launch's
//     `shared_mem` bytes, filled with 0xFF bytes (NaN for floats) so that reading
//     what no thread wrote shows up in the results.
//   * atomics are std::atomic_ref; warp shuffles are a 32-slot exchange between the
//     lanes of a full warp, with a barrier on each side.
//
// Every barrier waits at most MINIDL_EMU_TIMEOUT seconds (default 60), so a kernel
// that deadlocks fails the launch with a message instead of hanging the tests.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// ------------------------------------------------------------------ the CUDA keywords

#define __global__
#define __device__ static inline
#define __host__
#define __forceinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __ldg(p) (*(p))

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

inline thread_local dim3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
inline dim3 block_dim, grid_dim;
constexpr int warp_size = 32;

// Thrown inside a kernel's thread to unwind it once the launch has failed.
struct Abort {};

// ------------------------------------------------------------------ failure and barriers

struct Launch {
    std::mutex mutex;
    std::string error;                // the first failure's message; empty while all is well
    std::atomic<bool> failed{false};
    std::chrono::milliseconds timeout{60000};
    std::vector<unsigned char> dynamic_shared;
};
inline Launch launch_state;

inline void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(launch_state.mutex);
    if (!launch_state.failed) {
        launch_state.error = message;
        launch_state.failed = true;
    }
}

inline std::string block_name() {
    return "block (" + std::to_string(block_idx.x) + ", " + std::to_string(block_idx.y) + ", " +
           std::to_string(block_idx.z) + ")";
}

// A reusable barrier for `size` threads that also checks they all came from the same
// place: `site` is the source line of the __syncthreads (or shuffle) that called it, 0
// for "returned from the kernel". Mixed sites mean divergent control flow, which CUDA
// forbids for __syncthreads (a GPU may hang or skip it; here it is an error).
class Barrier {
  public:
    explicit Barrier(int size = 1) : size_(size) {}
    void resize(int size) { size_ = size; }

    void wait(int site, const char* what) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (launch_state.failed) { cv_.notify_all(); throw Abort{}; }
        if (arrived_ == 0) { first_site_ = site; other_site_ = site; }
        else if (site != first_site_) other_site_ = site;
        if (++arrived_ == size_) {
            bool divergent = other_site_ != first_site_;
            arrived_ = 0;
            ++generation_;
            if (divergent) {
                auto where = [](int s) { return s ? "line " + std::to_string(s) : std::string("the kernel's return"); };
                fail(std::string("divergent ") + what + " in " + block_name() + ": threads met at " +
                     where(first_site_) + " and at " + where(other_site_) +
                     " (every thread of a block must reach the same barrier)");
            }
            cv_.notify_all();
            if (divergent) throw Abort{};
            return;
        }
        unsigned long generation = generation_;
        bool released = cv_.wait_for(lock, launch_state.timeout,
                                     [&] { return generation_ != generation || launch_state.failed; });
        if (!released) {
            fail(std::string("deadlock: ") + std::to_string(arrived_) + " of " + std::to_string(size_) +
                 " threads of " + block_name() + " waited at " + what + " (line " + std::to_string(site) +
                 ") for " + std::to_string(launch_state.timeout.count() / 1000) + " s; the others never came");
            cv_.notify_all();
        }
        if (launch_state.failed) throw Abort{};
    }

    void wake_all() { std::lock_guard<std::mutex> lock(mutex_); cv_.notify_all(); }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int size_, arrived_ = 0, first_site_ = 0, other_site_ = 0;
    unsigned long generation_ = 0;
};

struct Warp {
    Barrier barrier;
    unsigned long long slot[warp_size];
    int lanes = warp_size;
};

inline Barrier block_barrier;
inline std::vector<Warp> warps;
inline thread_local int linear_tid = 0;

inline void* dynamic_shared() { return launch_state.dynamic_shared.data(); }

// A lane's value goes to slot[lane]; after the barrier each lane reads its source's slot;
// the second barrier keeps a fast lane from overwriting a slot before it is read.
template <class T>
T shuffle(unsigned mask, T value, int source_lane, int site) {
    static_assert(sizeof(T) <= 8, "emu shuffles values of at most 8 bytes");
    Warp& warp = warps[linear_tid / warp_size];
    if (mask != 0xffffffffu || warp.lanes != warp_size) {
        fail("warp shuffle at line " + std::to_string(site) + ": the emulator supports full warps only "
             "(mask 0xffffffff and a block size that is a multiple of 32)");
        throw Abort{};
    }
    int lane = linear_tid % warp_size;
    std::memcpy(&warp.slot[lane], &value, sizeof(T));
    warp.barrier.wait(site, "warp shuffle");
    T result;
    std::memcpy(&result, &warp.slot[source_lane], sizeof(T));
    warp.barrier.wait(site, "warp shuffle");
    return result;
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define warpSize (emu::warp_size)

inline void __syncthreads(int site = __builtin_LINE()) { emu::block_barrier.wait(site, "__syncthreads"); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int site = __builtin_LINE()) {
    return emu::shuffle(mask, v, src % 32, site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int site = __builtin_LINE()) {
    int lane = emu::linear_tid % 32;
    return emu::shuffle(mask, v, lane + (int)delta < 32 ? lane + (int)delta : lane, site);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int site = __builtin_LINE()) {
    return emu::shuffle(mask, v, (emu::linear_tid % 32) ^ lane_mask, site);
}

// ------------------------------------------------------------------ device functions

using std::isfinite;
using std::isnan;

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

template <class T>
T atomicAdd(T* address, T value) { return std::atomic_ref<T>(*address).fetch_add(value); }
template <class T>
T atomicExch(T* address, T value) { return std::atomic_ref<T>(*address).exchange(value); }
template <class T>
T atomicCAS(T* address, T expected, T desired) {
    std::atomic_ref<T>(*address).compare_exchange_strong(expected, desired);
    return expected;  // the old value, whether or not the swap happened
}
template <class T>
T atomicMax(T* address, T value) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old < value && !a.compare_exchange_weak(old, value)) {}
    return old;
}

// ------------------------------------------------------------------ the launch

namespace emu {

template <class... A, size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

// Run kernel<<<grid, block, shared_bytes>>>(args): CUDA's cudaLaunchKernel, where
// args[i] points to the i-th argument's value and sizes[i] says how many bytes it has.
template <class... A>
int launch(const char* name, void (*kernel)(A...), const unsigned* grid, const unsigned* block,
           unsigned long long shared_bytes, void** args, const long long* sizes, int nargs) {
    static std::mutex one_launch_at_a_time;  // the static __shared__ arrays are one per kernel
    std::lock_guard<std::mutex> guard(one_launch_at_a_time);
    launch_state.error.clear();
    launch_state.failed = false;
    if (const char* t = std::getenv("MINIDL_EMU_TIMEOUT")) launch_state.timeout = std::chrono::milliseconds((long)(1000 * std::atof(t)));

    const long long expected[] = {(long long)sizeof(A)...};
    if (nargs != (int)sizeof...(A)) {
        fail(std::string(name) + " takes " + std::to_string(sizeof...(A)) + " arguments, got " + std::to_string(nargs));
        return 1;
    }
    for (int i = 0; i < nargs; ++i)
        if (sizes[i] != expected[i]) {
            fail(std::string(name) + ": argument " + std::to_string(i) + " must be a " + std::to_string(expected[i]) +
                 "-byte value, got " + std::to_string(sizes[i]) + " bytes (pass np.int32 / np.int64 / np.float32)");
            return 1;
        }
    int threads = (int)(block[0] * block[1] * block[2]);
    if (threads < 1 || threads > 1024 || grid[0] * grid[1] * grid[2] == 0) {
        fail(std::string(name) + ": a block has 1 to 1024 threads and a grid at least one block");
        return 1;
    }
    grid_dim = dim3(grid[0], grid[1], grid[2]);
    block_dim = dim3(block[0], block[1], block[2]);
    launch_state.dynamic_shared.assign(shared_bytes, 0xFF);
    block_barrier.resize(threads);
    warps = std::vector<Warp>((threads + warp_size - 1) / warp_size);
    for (size_t w = 0; w < warps.size(); ++w) {
        warps[w].lanes = std::min(warp_size, threads - (int)w * warp_size);
        warps[w].barrier.resize(warps[w].lanes);
    }

    auto cuda_thread = [&](int tid) {
        linear_tid = tid;
        thread_idx = dim3(tid % block[0], tid / block[0] % block[1], tid / (block[0] * block[1]));
        try {
            for (unsigned z = 0; z < grid[2]; ++z)
                for (unsigned y = 0; y < grid[1]; ++y)
                    for (unsigned x = 0; x < grid[0]; ++x) {
                        block_idx = dim3(x, y, z);
                        call(kernel, args, std::index_sequence_for<A...>{});
                        // Returning is a barrier too: the next block may reuse the shared arrays,
                        // and a thread still waiting at a __syncthreads is a divergent one.
                        block_barrier.wait(0, "__syncthreads");
                    }
        } catch (const Abort&) {
        } catch (const std::exception& e) {
            fail(std::string(name) + ": " + e.what());
        }
        // Wake any thread still waiting for this one, so the launch ends promptly.
        block_barrier.wake_all();
        for (auto& w : warps) w.barrier.wake_all();
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) pool.emplace_back(cuda_thread, t);
    for (auto& t : pool) t.join();
    return launch_state.failed ? 1 : 0;
}

}  // namespace emu

extern "C" const char* emu_last_error() { return emu::launch_state.error.c_str(); }

// emu.py appends one EMU_EXPORT(name) per kernel: a C entry point ctypes can call.
#define EMU_EXPORT(name)                                                                          \
    extern "C" int emu_launch_##name(const unsigned* grid, const unsigned* block,                 \
                                     unsigned long long shared_bytes, void** args,                 \
                                     const long long* sizes, int nargs) {                          \
        return emu::launch(#name, name, grid, block, shared_bytes, args, sizes, nargs);           \
    }
