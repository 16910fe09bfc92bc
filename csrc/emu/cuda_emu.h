// cuda_emu.h: run the unmodified CUDA kernels of csrc/cuda on the CPU, for machines without a GPU.
//
// minidl/backend/emu.py compiles one .cu file with g++ against this header and loads it with
// ctypes. The one idea: each CUDA thread is a FIBER, a function call with a stack of its own that
// can stop in the middle and be resumed later: stopping saves its registers on its stack and
// switches the CPU to another stack (emu_switch below, a dozen instructions). One OS thread runs a
// whole block, taking turns:
//
//     fiber 0 runs the kernel until its first __syncthreads(), then swaps back to the scheduler;
//     fiber 1 runs until the same __syncthreads() and swaps back; ... and so on to fiber 255.
//     Now all 256 wait at the barrier: the scheduler lets them go and starts the next round,
//     until every fiber has returned from the kernel. Then the next block, on the same fibers.
//
// A barrier costs two switches per thread, nanoseconds each with no OS involved, so a launch takes
// tens of microseconds to milliseconds, where one real OS thread per CUDA thread took ~20 ms. In detail:
//
//   * `__global__` kernels are plain C++ functions. `threadIdx`, `blockIdx` are thread_local
//     variables the scheduler sets before it resumes a fiber; `blockDim`, `gridDim` one per launch.
//   * Between two barriers the threads of a block run one after another, so a kernel that reads
//     what another thread writes, without a __syncthreads between, reads it before it is written.
//   * `__shared__` memory belongs to the block and starts out as garbage, as on a GPU: emu.py
//     rewrites `__shared__ float tile[64];` into EMU_SHARED(float, tile, [64]), a reference to
//     memory the block gets filled with 0xFF bytes (NaN as a float, -1 as an int), and
//     `extern __shared__ float buffer[];` into a pointer to the launch's `shared_mem` bytes,
//     filled the same way. A kernel that reads shared memory nobody wrote sees NaN, and so do its tests.
//   * A warp shuffle or vote is a barrier among the 32 fibers of a warp: each lane posts its value
//     and stops; the last lane to come copies the 32 values and lets the warp go on.
//   * atomics are std::atomic_ref (needed once blocks run on several OS threads, see below).
//   * A divergent __syncthreads (threads of a block at different barriers, or some of them
//     returned) or a warp op some lanes never reach is an error here, where a GPU would hang or
//     silently misbehave. The scheduler sees it at once: nobody can run and the block is not done.
//
// Modes, chosen by environment variables (documented in emu.py, which builds one library per mode):
//   MINIDL_EMU_BLOCK_ORDER  "shuffled" (default): the blocks in a seeded random order (a GPU
//     promises none; MINIDL_EMU_SEED, default 0, picks it). "ordered": x fastest, then y, z.
//     "concurrent": shuffled, and spread over MINIDL_EMU_WORKERS OS threads (default: one per
//     core) that run blocks at the same time: faster, and exposes races between blocks.
//   EMU_OS_THREADS (a compile flag: MINIDL_EMU_THREADS=os, implied by MINIDL_EMU_SANITIZE=thread):
//     every CUDA thread is a real std::thread and a barrier a real one, since ThreadSanitizer
//     follows threads but not fibers. Blocks then run one at a time, and a barrier gives up after
//     MINIDL_EMU_TIMEOUT seconds (default 60) so a deadlock fails instead of hanging.
//   -fsanitize=address (MINIDL_EMU_SANITIZE=address): fibers tell AddressSanitizer when they
//     switch stacks; every __shared__ array is a separate heap block, so overruns are caught too.
// Before a launch, emu.py checks it against CUDA's limits (grid and block sizes, shared memory);
// the sum of a block's __shared__ arrays is checked here, when the block first touches them.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sched.h>
#include <unistd.h>
#include <sys/mman.h>
#include <ucontext.h>

#ifndef EMU_OS_THREADS
#define EMU_OS_THREADS 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

// ------------------------------------------------------------------ the CUDA keywords

#define __global__
#define __device__ static inline
#define __host__
#define __forceinline__
#define __shared__ static  // only where emu.py's rewrite into EMU_SHARED (below) did not apply
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __ldg(p) (*(p))

// `__shared__ float tile[64];` as emu.py rewrites it: `EMU_SHARED(float, tile, [64]);`, a reference
// to the running block's copy. The lambda's type is unique to the line, so each line is its own array.
#define EMU_SHARED(T, name, dims) T(&name) dims = emu::static_shared<T dims>([] {})

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

inline thread_local dim3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
inline thread_local int linear_tid = 0;  // threadIdx as one number: x + blockDim.x * (y + blockDim.y * z)
inline dim3 block_dim, grid_dim;
constexpr int warp_size = 32;

// Thrown inside a CUDA thread to unwind it once the launch has failed.
struct Abort {};

// ------------------------------------------------------------------ one launch's state and errors

struct Launch {
    std::mutex mutex;
    std::string name;                 // the kernel's
    std::string error;                // the first failure's message; empty while all is well
    std::atomic<bool> failed{false};
    std::chrono::milliseconds timeout{60000};
    unsigned long long dynamic_bytes = 0, shared_limit = 48 * 1024;
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

inline std::string where(int site) {
    return site > 0 ? "line " + std::to_string(site) : site == 0 ? "the kernel's return" : "the start of a block";
}

// ------------------------------------------------------------------ shared memory

// The shared memory of the block an OS thread is running: one buffer per __shared__ declaration,
// reused from block to block and refilled with 0xFF at each block's first touch, and the dynamic one.
struct Block {
    struct Slot {
        unsigned long block = 0;  // the block it was last filled for
        size_t bytes = 0;
        std::unique_ptr<unsigned char[]> data;
    };
    std::vector<Slot> statics;  // by declaration (its site number)
    unsigned long number = 0;   // counts the blocks this Block has run: a slot of an older one is stale
    unsigned long long static_bytes = 0, dynamic_bytes = 0;
    std::unique_ptr<unsigned char[]> dynamic;
    std::mutex mutex;  // with EMU_OS_THREADS, the threads of a block look up slots at the same time

    void start(unsigned long long dynamic_size) {
        ++number;
        static_bytes = 0;
        if (dynamic_size != dynamic_bytes) {  // an exact size, so AddressSanitizer catches overruns
            dynamic.reset(dynamic_size ? new unsigned char[dynamic_size] : nullptr);
            dynamic_bytes = dynamic_size;
        }
        if (dynamic_size) std::memset(dynamic.get(), 0xFF, dynamic_size);
    }
};
inline thread_local Block* current_block = nullptr;

inline int new_shared_site() {
    static std::atomic<int> sites{0};
    return sites++;
}

// The running block's copy of one `__shared__ T name;` (T may be an array type): the first thread
// of the block to get to the declaration fills it with 0xFF bytes, the others find it ready.
template <class T, class Line>
T& static_shared(Line) {
    static const int site = new_shared_site();
    Block& block = *current_block;
    std::unique_lock<std::mutex> lock(block.mutex, std::defer_lock);
    if (EMU_OS_THREADS) lock.lock();
    if ((int)block.statics.size() <= site) block.statics.resize(site + 1);
    Block::Slot& slot = block.statics[site];
    if (slot.block != block.number) {
        if (slot.bytes != sizeof(T)) {
            slot.data.reset(new unsigned char[sizeof(T)]);
            slot.bytes = sizeof(T);
        }
        std::memset(slot.data.get(), 0xFF, sizeof(T));
        slot.block = block.number;
        block.static_bytes += sizeof(T);
        if (block.static_bytes + launch_state.dynamic_bytes > launch_state.shared_limit) {
            fail(launch_state.name + ": " + std::to_string(block.static_bytes) + " bytes of __shared__ arrays + " +
                 std::to_string(launch_state.dynamic_bytes) + " bytes of dynamic shared memory exceed the limit of " +
                 std::to_string(launch_state.shared_limit) + " bytes per block (48 KB unless the kernel opts in)");
            throw Abort{};
        }
    }
    return *reinterpret_cast<T*>(slot.data.get());
}

inline void* dynamic_shared() { return current_block->dynamic.get(); }

#if !EMU_OS_THREADS
// ------------------------------------------------------------------ fibers (the default)

// Switching fibers. On x86-64: emu_switch saves the registers a C function must preserve on the
// current stack, stores the stack pointer in *save, loads `load` as the new one and restores that
// fiber's registers: fifteen instructions. (Not the floating-point control registers: no kernel
// changes the rounding mode, and restoring them would cost more than all the rest.) Elsewhere
// ucontext's swapcontext, which is slower: it also saves the signal mask, a system call. A new
// fiber's stack is made to look as if it had switched away just before calling `entry`.
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)  // EMU_UCONTEXT: try the portable way
extern "C" __attribute__((visibility("hidden"))) void emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct Context {
    void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { emu_switch(&from.sp, to.sp); }
inline void make_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
    auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15));
    uint64_t* sp = top - 8;
    for (int r = 0; r < 6; ++r) sp[r] = 0;      // r15, r14, r13, r12, rbx, rbp
    sp[6] = reinterpret_cast<uint64_t>(entry);  // where emu_switch's `ret` goes
    sp[7] = 0;                                  // entry's return address: none (it never returns)
    c.sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

struct Fiber {
    enum State { Runnable, Running, AtBarrier, AtWarp, Returned };
    Context context;
    void* stack = nullptr;
    int tid = 0;
    dim3 idx;
    State state = Returned;
    int site = 0;                 // the source line it waits at; 0 once it has returned
    const char* what = "";        // what waits there: "__syncthreads", "warp shuffle", ...
    bool in_kernel = false;       // between the kernel's start and its return: an abort unwinds it
    unsigned long long post = 0;  // the value it brings to a warp op
    struct Worker* worker = nullptr;
    void* asan_fake_stack = nullptr;
};

struct Warp {
    int arrived = 0, site = 0;
    unsigned long long values[warp_size];  // the lanes' posts, copied when the last lane comes
};

constexpr size_t stack_bytes = 256 * 1024;  // address space; only the pages a kernel touches are used

inline void fiber_main();

// An OS thread that runs blocks: its fibers (kept from launch to launch), their scheduler, and the block.
struct Worker {
    Context scheduler;
    std::vector<std::unique_ptr<Fiber>> fibers;
    std::vector<Warp> warps;
    Block block;
    int threads = 0;
    void (*run_thread)(const void*) = nullptr;  // runs the kernel as the current CUDA thread
    const void* kernel_call = nullptr;
    bool aborting = false;
    const void* scheduler_stack = nullptr;  // for AddressSanitizer: where the scheduler's stack is
    size_t scheduler_stack_bytes = 0;

    ~Worker() {
        for (auto& f : fibers) munmap(f->stack, stack_bytes);
    }

    void prepare(int n, void (*run)(const void*), const void* call) {
        threads = n;
        run_thread = run;
        kernel_call = call;
        while ((int)fibers.size() < n) {
            auto f = std::make_unique<Fiber>();
            f->stack = mmap(nullptr, stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (f->stack == MAP_FAILED) throw std::runtime_error("emu: no memory for a fiber's stack");
            mprotect(f->stack, 4096, PROT_NONE);  // a guard page: a stack overflow crashes instead of corrupting
            // Each stack's top at a different offset within a page: at the same one, the fibers' hot
            // stack lines would all compete for one set of the CPU's cache.
            size_t color = fibers.size() % 64 * 64;
            make_context(f->context, f->stack, stack_bytes - color, fiber_main);
            fibers.push_back(std::move(f));
        }
        for (int t = 0; t < n; ++t) {
            Fiber& f = *fibers[t];
            f.worker = this;
            f.tid = t;
            f.idx = dim3(t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y));
        }
        warps.assign((n + warp_size - 1) / warp_size, Warp{});
    }

    void resume(Fiber& f);
    bool run_block(dim3 idx);
};

inline Worker& this_worker() {
    thread_local Worker worker;
    return worker;
}
inline thread_local Fiber* this_fiber = nullptr;

// Switch from the scheduler to fiber f until it stops.
inline void Worker::resume(Fiber& f) {
    this_fiber = &f;
    thread_idx = f.idx;
    linear_tid = f.tid;
#if defined(__SANITIZE_ADDRESS__)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f.stack, stack_bytes);
    switch_context(scheduler, f.context);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    switch_context(scheduler, f.context);
#endif
}

// Inside a fiber: back to the scheduler, until it resumes this fiber (then unwind if the launch failed).
inline void arrived_from_scheduler(Worker& w, Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(f.asan_fake_stack, &w.scheduler_stack, &w.scheduler_stack_bytes);
#endif
    (void)w, (void)f;
}
inline void suspend(Fiber& f) {
    Worker& w = *f.worker;
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(&f.asan_fake_stack, w.scheduler_stack, w.scheduler_stack_bytes);
#endif
    switch_context(f.context, w.scheduler);
    arrived_from_scheduler(w, f);
    if (f.in_kernel && w.aborting) throw Abort{};
}

// Every fiber runs this forever: the kernel once per block, then a pause until the next block.
inline void fiber_main() {
    Fiber& f = *this_fiber;
    arrived_from_scheduler(*f.worker, f);
    for (;;) {
        Worker& w = *f.worker;
        f.in_kernel = true;
        try {
            w.run_thread(w.kernel_call);
        } catch (const Abort&) {
        } catch (const std::exception& e) {
            fail(launch_state.name + ": " + e.what());
        }
        f.in_kernel = false;
        f.state = Fiber::Returned;
        f.site = 0;
        suspend(f);
    }
}

// Why a block where nobody can run is not done: "" if every fiber waits at the same __syncthreads.
inline std::string stuck(const std::vector<std::unique_ptr<Fiber>>& fibers, int threads) {
    for (int t = 0; t < threads; ++t) {
        const Fiber& f = *fibers[t];
        if (f.state != Fiber::AtWarp) continue;
        int first_lane = t / warp_size * warp_size, other = first_lane;
        while (fibers[other]->state == Fiber::AtWarp) ++other;  // a lane that is not there (one is missing)
        return std::string("deadlock: thread ") + std::to_string(t) + " of " + block_name() + " waits at a " + f.what +
               " (line " + std::to_string(f.site) + ") that thread " + std::to_string(other) + " of its warp never reaches (it is at " +
               where(fibers[other]->site) + "; all 32 lanes of a warp must reach the same warp op)";
    }
    for (int t = 1; t < threads; ++t)
        if (fibers[t]->site != fibers[0]->site) {
            int a = std::max(fibers[0]->site, fibers[t]->site), b = std::min(fibers[0]->site, fibers[t]->site);
            return "divergent __syncthreads in " + block_name() + ": threads met at " + where(a) + " and at " + where(b) +
                   " (every thread of a block must reach the same barrier)";
        }
    return "";
}

// Run one block: rounds in which each runnable fiber runs until it stops, until all have returned.
inline bool Worker::run_block(dim3 idx) {
    block_idx = idx;
    block.start(launch_state.dynamic_bytes);
    current_block = &block;
    for (int t = 0; t < threads; ++t) fibers[t]->state = Fiber::Runnable;
    std::string problem;
    while (!launch_state.failed) {
        for (bool ran = true; ran;) {  // again while a warp op's last lane made earlier lanes runnable
            ran = false;
            for (int t = 0; t < threads; ++t) {
                Fiber& f = *fibers[t];
                if (f.state != Fiber::Runnable) continue;
                f.state = Fiber::Running;
                resume(f);
                ran = true;
            }
        }
        if (launch_state.failed) break;
        // Nobody can run: every fiber waits at a barrier, at a warp op, or has returned.
        bool all_returned = true;
        for (int t = 0; t < threads; ++t) all_returned = all_returned && fibers[t]->state == Fiber::Returned;
        if (all_returned) return true;
        problem = stuck(fibers, threads);
        if (!problem.empty()) break;
        for (int t = 0; t < threads; ++t) fibers[t]->state = Fiber::Runnable;  // all at one __syncthreads: go on
    }
    if (!problem.empty()) fail(problem);
    // Unwind the fibers still inside the kernel (each throws Abort where it waits), ready for the next launch.
    aborting = true;
    for (int t = 0; t < threads; ++t)
        if (fibers[t]->in_kernel) resume(*fibers[t]);
    aborting = false;
    return false;
}

inline void sync_block(int site) {
    Fiber& f = *this_fiber;
    f.state = Fiber::AtBarrier;
    f.site = site;
    f.what = "__syncthreads";
    suspend(f);
}

// Every lane posts `mine`; once all 32 have, each gets the 32 posts, by lane (valid until its next warp op).
inline const unsigned long long* warp_exchange(unsigned mask, unsigned long long mine, int site, const char* what) {
    Fiber& f = *this_fiber;
    Worker& w = *f.worker;
    int first_lane = f.tid / warp_size * warp_size;
    if (mask != 0xffffffffu || w.threads - first_lane < warp_size) {
        fail(std::string(what) + " at line " + std::to_string(site) + ": the emulator supports full warps only "
             "(mask 0xffffffff and a block size that is a multiple of 32)");
        throw Abort{};
    }
    Warp& warp = w.warps[f.tid / warp_size];
    if (warp.arrived > 0 && warp.site != site) {
        fail(std::string("divergent ") + what + " in " + block_name() + ": lanes of warp " + std::to_string(f.tid / warp_size) +
             " met at line " + std::to_string(warp.site) + " and at line " + std::to_string(site));
        throw Abort{};
    }
    warp.site = site;
    f.post = mine;
    f.site = site;
    f.what = what;
    if (++warp.arrived < warp_size) {
        f.state = Fiber::AtWarp;
        suspend(f);
    } else {  // the last lane: the others may go on (this one goes on without stopping)
        warp.arrived = 0;
        for (int lane = 0; lane < warp_size; ++lane) {
            Fiber& g = *w.fibers[first_lane + lane];
            warp.values[lane] = g.post;
            if (&g != &f) g.state = Fiber::Runnable;
        }
    }
    return warp.values;  // nobody writes them before this lane has come to the next warp op
}

#else
// ------------------------------------------------------------------ real threads (EMU_OS_THREADS, for TSan)

// A reusable barrier for `size` threads that also checks they all came from the same place: `site`
// is the source line of the __syncthreads (or warp op) that called it, 0 for "returned from the
// kernel". Mixed sites mean divergent control flow.
inline std::string seconds(std::chrono::milliseconds t) {
    std::string s = std::to_string(t.count() / 1000.0);  // "0.500000"
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
}

class Barrier {
  public:
    explicit Barrier(int size = 1) : size_(size) {}
    void reset(int size) {  // for a new launch: a failed one may have left threads counted
        std::scoped_lock lock(mutex_[0], mutex_[1]);
        size_ = size;
        arrived_ = 0;
    }

    // One mutex per parity of the generation (which use of the barrier this is). With a single one,
    // a thread slow to leave a barrier would lock it after faster threads had already come to the
    // next barrier, and ThreadSanitizer would take that as ordering their work in between before
    // its own: a race there would go unseen.
    void wait(int site, const char* what) {
        unsigned long generation = generation_;
        int phase = generation & 1;
        std::unique_lock<std::mutex> lock(mutex_[phase]);
        if (launch_state.failed) { cv_[phase].notify_all(); throw Abort{}; }
        if (arrived_ == 0) { first_site_ = site; other_site_ = site; }
        else if (site != first_site_) other_site_ = site;
        if (++arrived_ == size_) {
            bool divergent = other_site_ != first_site_;
            arrived_ = 0;
            if (divergent) {
                int a = std::max(first_site_, other_site_), b = std::min(first_site_, other_site_);  // a line first
                fail(std::string("divergent ") + what + " in " + block_name() + ": threads met at " + where(a) +
                     " and at " + where(b) + " (every thread of a block must reach the same barrier)");
            }
            if (site == 0 && !divergent && at_block_end) at_block_end();  // while the others wait
            ++generation_;
            cv_[phase].notify_all();
            if (divergent) throw Abort{};
            return;
        }
        // wait_until on the system clock (pthread_cond_timedwait), not wait_for (pthread_cond_clockwait):
        // GCC 12's ThreadSanitizer misses the synchronization of the latter and with it every race
        // that follows a barrier.
        bool released = cv_[phase].wait_until(lock, std::chrono::system_clock::now() + launch_state.timeout,
                                              [&] { return generation_ != generation || launch_state.failed; });
        if (!released) {
            fail(std::string("deadlock: ") + std::to_string(arrived_) + " of " + std::to_string(size_) + " threads of " +
                 block_name() + " waited at " + what + " (line " + std::to_string(site) + ") for " +
                 seconds(launch_state.timeout) + " s; the others never came");
            cv_[phase].notify_all();
        }
        if (launch_state.failed) throw Abort{};
    }

    void wake_all() {
        for (int phase : {0, 1}) {
            std::lock_guard<std::mutex> lock(mutex_[phase]);
            cv_[phase].notify_all();
        }
    }

    std::function<void()> at_block_end;  // run by the last thread to return from a block

  private:
    std::mutex mutex_[2];
    std::condition_variable cv_[2];
    int size_, arrived_ = 0, first_site_ = 0, other_site_ = 0;
    std::atomic<unsigned long> generation_{0};
};

struct Warp {
    Barrier barrier;
    unsigned long long slot[warp_size];
    int lanes = warp_size;
};

inline Barrier block_barrier;
inline std::vector<Warp> warps;
inline Block the_block;  // blocks run one at a time

inline void sync_block(int site) { block_barrier.wait(site, "__syncthreads"); }

// A lane's value goes to slot[lane]; after the barrier each lane copies all 32; the second barrier
// keeps a fast lane from overwriting a slot before the others have read it.
inline const unsigned long long* warp_exchange(unsigned mask, unsigned long long mine, int site, const char* what) {
    thread_local unsigned long long all[warp_size];
    Warp& warp = warps[linear_tid / warp_size];
    if (mask != 0xffffffffu || warp.lanes != warp_size) {
        fail(std::string(what) + " at line " + std::to_string(site) + ": the emulator supports full warps only "
             "(mask 0xffffffff and a block size that is a multiple of 32)");
        throw Abort{};
    }
    warp.slot[linear_tid % warp_size] = mine;
    warp.barrier.wait(site, what);
    std::memcpy(all, warp.slot, sizeof warp.slot);
    warp.barrier.wait(site, what);
    return all;
}
#endif

template <class T>
T shuffle(unsigned mask, T value, int source_lane, int site) {
    static_assert(sizeof(T) <= 8, "emu shuffles values of at most 8 bytes");
    unsigned long long mine = 0;
    std::memcpy(&mine, &value, sizeof(T));
    const unsigned long long* all = warp_exchange(mask, mine, site, "warp shuffle");
    T result;
    std::memcpy(&result, &all[source_lane], sizeof(T));
    return result;
}

inline unsigned ballot(unsigned mask, bool predicate, int site) {
    const unsigned long long* all = warp_exchange(mask, predicate, site, "warp vote");
    unsigned bits = 0;
    for (int lane = 0; lane < warp_size; ++lane) bits |= (all[lane] ? 1u : 0u) << lane;
    return bits;
}

inline int lane() { return linear_tid % warp_size; }

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define warpSize (emu::warp_size)

inline void __syncthreads(int site = __builtin_LINE()) { emu::sync_block(site); }

// `width` splits the warp into groups of that many lanes (a power of two), each shuffling within itself.
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32, int site = __builtin_LINE()) {
    return emu::shuffle(mask, v, emu::lane() / width * width + (src & (width - 1)), site);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, int site = __builtin_LINE()) {
    int lane = emu::lane();
    return emu::shuffle(mask, v, lane % width >= (int)delta ? lane - (int)delta : lane, site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, int site = __builtin_LINE()) {
    int lane = emu::lane();
    return emu::shuffle(mask, v, lane % width + (int)delta < width ? lane + (int)delta : lane, site);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, int site = __builtin_LINE()) {
    int lane = emu::lane(), source = lane ^ lane_mask;
    return emu::shuffle(mask, v, source < (lane / width + 1) * width ? source : lane, site);  // not from a later group
}
inline unsigned __ballot_sync(unsigned mask, int predicate, int site = __builtin_LINE()) {
    return emu::ballot(mask, predicate != 0, site);
}
inline int __any_sync(unsigned mask, int predicate, int site = __builtin_LINE()) {
    return emu::ballot(mask, predicate != 0, site) != 0;
}
inline int __all_sync(unsigned mask, int predicate, int site = __builtin_LINE()) {
    return emu::ballot(mask, predicate != 0, site) == mask;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, int site = __builtin_LINE()) { emu::ballot(mask, false, site); }
inline unsigned __activemask() { return 0xffffffffu; }  // the emulator's warps are always full

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
T atomicSub(T* address, T value) { return std::atomic_ref<T>(*address).fetch_sub(value); }
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
template <class T>
T atomicMin(T* address, T value) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (value < old && !a.compare_exchange_weak(old, value)) {}
    return old;
}

// ------------------------------------------------------------------ the launch

namespace emu {

template <class... A>
struct KernelCall {
    void (*kernel)(A...);
    void** args;  // args[i] points to the i-th argument's value
};

template <class... A, size_t... I>
void call(const KernelCall<A...>& c, std::index_sequence<I...>) {
    c.kernel(*static_cast<std::remove_reference_t<A>*>(c.args[I])...);
}

template <class... A>
void run_thread(const void* c) { call(*static_cast<const KernelCall<A...>*>(c), std::index_sequence_for<A...>{}); }

// The order of the blocks: block_order(i) is the i-th to run, as one number (x fastest). Shuffled,
// a seeded Fisher-Yates permutation; past 2^16 blocks the cheaper (a i + b) mod n, with a prime to n.
struct BlockOrder {
    unsigned long long n, a = 1, b = 0;
    std::vector<unsigned> table;
    BlockOrder(unsigned long long blocks, bool shuffled, unsigned long long seed) : n(blocks) {
        if (!shuffled || n < 2) return;
        std::mt19937_64 random(seed);
        if (n <= (1u << 16)) {
            table.resize(n);
            std::iota(table.begin(), table.end(), 0u);
            std::shuffle(table.begin(), table.end(), random);
        } else {
            do a = random() % n; while (std::gcd(a, n) != 1);
            b = random() % n;
        }
    }
    unsigned long long operator()(unsigned long long i) const {
        return table.empty() ? (unsigned long long)(((unsigned __int128)a * i + b) % n) : table[i];
    }
};

inline dim3 block_at(unsigned long long i) {
    return dim3(i % grid_dim.x, i / grid_dim.x % grid_dim.y, i / ((unsigned long long)grid_dim.x * grid_dim.y));
}

// A few OS threads that run blocks side by side (MINIDL_EMU_BLOCK_ORDER=concurrent), kept between launches.
class Pool {
  public:
    // job(0) on this thread and job(1) ... job(n - 1) on the pool's, then wait for all.
    void run(int n, const std::function<void(int)>& job) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (pid_ != getpid()) {  // a forked child (a DataLoader worker, say) has none of its parent's threads
            pid_ = getpid();
            started_ = 0;
        }
        while (started_ < n - 1) {
            int index = ++started_;
            std::thread([this, index] { loop(index); }).detach();  // they live as long as the process
        }
        job_ = &job;
        taking_part_ = n;
        pending_ = n - 1;
        ++round_;
        lock.unlock();
        wake_.notify_all();
        job(0);
        lock.lock();
        done_.wait(lock, [&] { return pending_ == 0; });
    }

  private:
    void loop(int index) {
        unsigned long seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return round_ != seen; });
            seen = round_;
            if (index >= taking_part_) continue;
            const std::function<void(int)>* job = job_;
            lock.unlock();
            (*job)(index);
            lock.lock();
            if (--pending_ == 0) done_.notify_all();
        }
    }
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    pid_t pid_ = 0;
    int started_ = 0;
    const std::function<void(int)>* job_ = nullptr;
    unsigned long round_ = 0;
    int taking_part_ = 0, pending_ = 0;
};
inline Pool& pool() {
    static Pool* p = new Pool;  // never destroyed: its threads wait for work until the process ends
    return *p;
}

inline long env_long(const char* name, long fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atol(v) : fallback;
}

// Run kernel<<<grid, block, shared_bytes>>>(args): CUDA's cudaLaunchKernel, where args[i] points to
// the i-th argument's value and sizes[i] says how many bytes it has. emu.py checked the launch
// against CUDA's limits; shared_limit is the kernel's (48 KB, or what it opted in to).
template <class... A>
int launch(const char* name, void (*kernel)(A...), const unsigned* grid, const unsigned* block,
           unsigned long long shared_bytes, unsigned long long shared_limit, void** args, const long long* sizes,
           int nargs) {
    static std::mutex one_launch_at_a_time;  // the launch state, the fibers and the pool are one per library
    std::lock_guard<std::mutex> guard(one_launch_at_a_time);
    launch_state.name = name;
    launch_state.error.clear();
    launch_state.failed = false;
    const char* timeout = std::getenv("MINIDL_EMU_TIMEOUT");
    launch_state.timeout = std::chrono::milliseconds((long)(1000 * (timeout && *timeout ? std::atof(timeout) : 60.0)));
    launch_state.dynamic_bytes = shared_bytes;
    launch_state.shared_limit = shared_limit;

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
    long long threads = (long long)block[0] * block[1] * block[2];
    unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    if (threads < 1 || threads > 1024 || blocks == 0) {
        fail(std::string(name) + ": a block has 1 to 1024 threads and a grid at least one block");
        return 1;
    }
    std::string order = std::getenv("MINIDL_EMU_BLOCK_ORDER") ? std::getenv("MINIDL_EMU_BLOCK_ORDER") : "";
    if (order != "" && order != "ordered" && order != "shuffled" && order != "concurrent") {
        fail("MINIDL_EMU_BLOCK_ORDER=" + order + ": use ordered, shuffled (the default) or concurrent");
        return 1;
    }
    grid_dim = dim3(grid[0], grid[1], grid[2]);
    block_dim = dim3(block[0], block[1], block[2]);
    // The seed mixes in the kernel and its grid, so a launch's order does not depend on what ran before it.
    unsigned long long seed = (unsigned long long)env_long("MINIDL_EMU_SEED", 0) * 0x9E3779B97F4A7C15ull ^
                              std::hash<std::string>{}(name) ^ (blocks << 20) ^ grid[0];
    BlockOrder block_order(blocks, order != "ordered", seed);
    KernelCall<A...> c{kernel, args};

#if !EMU_OS_THREADS
    std::atomic<unsigned long long> next{0};
    auto job = [&](int) {
        Worker& w = this_worker();
        try {
            w.prepare((int)threads, run_thread<A...>, &c);
        } catch (const std::exception& e) {
            fail(std::string(name) + ": " + e.what());
            return;
        }
        for (unsigned long long i; !launch_state.failed && (i = next++) < blocks;)
            if (!w.run_block(block_at(block_order(i)))) break;
    };
    cpu_set_t cores;
    long available = sched_getaffinity(0, sizeof cores, &cores) == 0 ? CPU_COUNT(&cores) : 1;
    long workers = order == "concurrent" ? env_long("MINIDL_EMU_WORKERS", available) : 1;
    workers = std::max(1L, std::min<long>(workers, (long)std::min<unsigned long long>(blocks, 64)));
    if (workers > 1) pool().run((int)workers, job);
    else job(0);
#else
    block_barrier.reset((int)threads);
    warps = std::vector<Warp>((threads + warp_size - 1) / warp_size);
    for (size_t w = 0; w < warps.size(); ++w) {
        warps[w].lanes = std::min<int>(warp_size, (int)threads - (int)w * warp_size);
        warps[w].barrier.reset(warps[w].lanes);
    }
    // The next block's shared memory is made ready by the last thread to return from a block, while
    // the others wait (not at a barrier of its own: after such a one, ThreadSanitizer missed races).
    the_block.start(shared_bytes);
    block_barrier.at_block_end = [&] { the_block.start(shared_bytes); };
    auto cuda_thread = [&](int tid) {
        current_block = &the_block;
        linear_tid = tid;
        thread_idx = dim3(tid % block[0], tid / block[0] % block[1], tid / (block[0] * block[1]));
        try {
            for (unsigned long long i = 0; i < blocks; ++i) {
                block_idx = block_at(block_order(i));
                call(c, std::index_sequence_for<A...>{});
                // Returning is a barrier too: a thread still waiting at a __syncthreads is a divergent one.
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
    std::vector<std::thread> os_threads;
    os_threads.reserve(threads);
    for (int t = 0; t < threads; ++t) os_threads.emplace_back(cuda_thread, t);
    for (auto& t : os_threads) t.join();
#endif
    return launch_state.failed ? 1 : 0;
}

}  // namespace emu

extern "C" const char* emu_last_error() { return emu::launch_state.error.c_str(); }

// emu.py appends one EMU_EXPORT(name) per kernel: a C entry point ctypes can call.
#define EMU_EXPORT(name)                                                                                  \
    extern "C" int emu_launch_##name(const unsigned* grid, const unsigned* block, unsigned long long shared_bytes, \
                                     unsigned long long shared_limit, void** args, const long long* sizes,         \
                                     int nargs) {                                                         \
        return emu::launch(#name, name, grid, block, shared_bytes, shared_limit, args, sizes, nargs);     \
    }
