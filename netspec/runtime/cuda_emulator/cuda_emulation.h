// netspec's CUDA emulation header: compiles netspec's generated kernels.cu as C++ with g++, so
// that the kernels run on the CPU (netspec/runtime/cuda_emulator/, NETSPEC_CUDA_EMULATE=1).
//
// The subset of CUDA netspec's renderers use: `extern "C" __global__` functions, static
// `__shared__` arrays, `__syncthreads`, threadIdx/blockIdx/blockDim/gridDim in x, y, z, float math
// (expf, logf, sqrtf, rsqrtf, fmaxf, ...), `__int_as_float` and `float4` (the GEMMs' 128-bit
// loads through casts of aligned float pointers). No atomics, warp intrinsics or
// dynamic shared memory: a kernel using them fails to compile here, saying so.
//
// Execution: the blocks of a grid run one after another; each thread of a block is a fiber
// (its own stack); `__syncthreads()` switches to the next fiber. When every live thread of the
// block has reached the same barrier, all go on; when some have returned while others wait at a
// barrier, or threads wait at different barriers, the launch fails with an error (on a GPU that
// is undefined behaviour: a hang or silently wrong sums). Threads run in index order, or in
// reverse order (a second pass in tests) so that races between threads of a block change the
// result. Every block's shared memory starts filled with NaN (all bits set), so a read before
// any thread wrote it poisons the result. A kernel whose text has no `__syncthreads` runs its threads as plain calls.
//
// What this cannot see: data races between blocks (they run in sequence), out-of-bounds reads
// and writes inside an allocation's neighbours (only a red zone after each allocation is
// checked, by the Python side), warp-level behaviour, float contraction into FMA (built with
// -ffp-contract=off, while nvcc contracts by default: results differ in the last bits).
//
// Everything lives in an anonymous namespace and the library is built with
// -fvisibility=hidden: g++ exports inline/thread_local variables as GNU unique symbols, which the
// dynamic linker merges across every loaded library, even with RTLD_LOCAL, so two kernel
// libraries in one process would otherwise share one scheduler. Only the launch entry points
// (NETSPEC_EMU_EXPORT, appended by the builder) are exported.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <sys/mman.h>

#if !defined(__x86_64__) && !defined(NETSPEC_EMU_UCONTEXT)
#define NETSPEC_EMU_UCONTEXT 1
#endif
#ifdef NETSPEC_EMU_UCONTEXT
#include <ucontext.h>
#endif

namespace {

struct netspec_uint3 { unsigned int x, y, z; };
typedef netspec_uint3 netspec_dim3;

// -- fibers ----------------------------------------------------------------------------------
#ifndef NETSPEC_EMU_UCONTEXT
// A hand-written x86-64 switch: saves the callee-saved registers on the current stack, swaps
// stack pointers, restores. About 10x faster than swapcontext, which also saves the signal
// mask with a system call. (System V ABI: rbx, rbp, r12-r15 are callee-saved; the kernels do
// not change MXCSR or the x87 control word.)
extern "C" void netspec_emu_switch(void** save_sp, void* load_sp)
    __attribute__((visibility("hidden")));
asm(R"(
    .text
    .globl netspec_emu_switch
    .hidden netspec_emu_switch
    .type netspec_emu_switch,@function
netspec_emu_switch:
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
    .size netspec_emu_switch, .-netspec_emu_switch
)");
#endif

// the linker's bounds of the __shared__ section (absent when no kernel has shared memory)
extern "C" char __start_netspec_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_netspec_shared[] __attribute__((weak, visibility("hidden")));

void poison_shared() {
    if (__start_netspec_shared && __stop_netspec_shared > __start_netspec_shared)
        memset(__start_netspec_shared, 0xFF, size_t(__stop_netspec_shared - __start_netspec_shared));
}

enum { FIBER_READY = 0, FIBER_AT_BARRIER = 1, FIBER_DONE = 2 };
const size_t kStack = 64 * 1024;      // per thread; the kernels keep a few hundred bytes of locals

struct Fiber {
    char* stack = nullptr;
    int state = FIBER_READY;
    int barrier = -1;                  // the source line of the barrier it waits at
#ifdef NETSPEC_EMU_UCONTEXT
    ucontext_t uc;
#else
    void* sp = nullptr;
#endif
    netspec_uint3 tid;
};

struct Emu {
    netspec_uint3 threadIdx, blockIdx;
    netspec_dim3 blockDim, gridDim;
    Fiber* fibers = nullptr;
    size_t nfibers = 0;
    Fiber* current = nullptr;
    bool in_fiber = false;
    bool barriers_allowed = false;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
#ifdef NETSPEC_EMU_UCONTEXT
    ucontext_t main_uc;
#else
    void* main_sp = nullptr;
#endif
    char error[512] = {0};
};
Emu emu;

void emu_fail(const char* fmt, int a, int b, int c) {
    if (!emu.error[0])
        snprintf(emu.error, sizeof emu.error, fmt, a, b, c);
}

void to_scheduler() {
    Fiber* f = emu.current;
#ifdef NETSPEC_EMU_UCONTEXT
    swapcontext(&f->uc, &emu.main_uc);
#else
    netspec_emu_switch(&f->sp, emu.main_sp);
#endif
}

void fiber_entry() {
    emu.body(emu.body_arg);
    emu.current->state = FIBER_DONE;
    to_scheduler();
    abort();                           // a finished fiber is never resumed
}

void ensure_fibers(size_t n) {
    if (emu.nfibers >= n)
        return;
    Fiber* fs = new Fiber[n];
    for (size_t i = 0; i < emu.nfibers; ++i)
        fs[i].stack = emu.fibers[i].stack;
    for (size_t i = emu.nfibers; i < n; ++i) {
        void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "netspec CUDA emulator: out of memory for fiber stacks\n");
            abort();
        }
        mprotect(p, 4096, PROT_NONE);  // a guard page: a stack overflow faults, not corrupts
        fs[i].stack = static_cast<char*>(p);
    }
    delete[] emu.fibers;
    emu.fibers = fs;
    emu.nfibers = n;
}

void start_fiber(Fiber* f) {
#ifdef NETSPEC_EMU_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = kStack;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_entry, 0);
#else
    // the first switch "returns" into fiber_entry with the stack aligned as after a call
    uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + kStack) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                   // fiber_entry's return address (unused)
    *--sp = reinterpret_cast<void*>(&fiber_entry);     // where `ret` goes
    for (int i = 0; i < 6; ++i)
        *--sp = nullptr;                               // rbp rbx r12 r13 r14 r15
    f->sp = sp;
#endif
}

void resume(Fiber* f) {
    emu.current = f;
    emu.threadIdx = f->tid;
#ifdef NETSPEC_EMU_UCONTEXT
    swapcontext(&emu.main_uc, &f->uc);
#else
    netspec_emu_switch(&emu.main_sp, f->sp);
#endif
}

void barrier(int line) {
    if (!emu.in_fiber) {
        emu_fail("__syncthreads (line %d) in a kernel launched without barriers%s%s", line, 0, 0);
        return;
    }
    emu.current->state = FIBER_AT_BARRIER;
    emu.current->barrier = line;
    to_scheduler();
}

// Runs one launch: grid x block threads, each calling body(arg). Returns 0, or 1 with
// emu.error set.
int run_grid(netspec_dim3 grid, netspec_dim3 block, bool barriers, bool reverse,
             void (*body)(void*), void* arg) {
    emu.error[0] = 0;
    emu.gridDim = grid;
    emu.blockDim = block;
    emu.body = body;
    emu.body_arg = arg;
    const size_t nt = size_t(block.x) * block.y * block.z;
    if (barriers)
        ensure_fibers(nt);
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        emu.blockIdx = {bx, by, bz};
        poison_shared();
        if (!barriers) {
            emu.in_fiber = false;
            for (size_t k = 0; k < nt; ++k) {
                size_t t = reverse ? nt - 1 - k : k;
                emu.threadIdx = {unsigned(t % block.x), unsigned(t / block.x % block.y),
                                 unsigned(t / (size_t(block.x) * block.y))};
                body(arg);
                if (emu.error[0])
                    return 1;
            }
            continue;
        }
        emu.in_fiber = true;
        for (size_t t = 0; t < nt; ++t) {
            Fiber* f = &emu.fibers[t];
            f->tid = {unsigned(t % block.x), unsigned(t / block.x % block.y),
                      unsigned(t / (size_t(block.x) * block.y))};
            f->state = FIBER_READY;
            f->barrier = -1;
            start_fiber(f);
        }
        for (;;) {
            for (size_t k = 0; k < nt; ++k) {
                Fiber* f = &emu.fibers[reverse ? nt - 1 - k : k];
                if (f->state == FIBER_READY)
                    resume(f);
            }
            emu.in_fiber = false;
            size_t done = 0, waiting = 0;
            int line = -1, other = -1;
            for (size_t t = 0; t < nt; ++t) {
                Fiber* f = &emu.fibers[t];
                if (f->state == FIBER_DONE) {
                    ++done;
                } else {
                    ++waiting;
                    if (line < 0)
                        line = f->barrier;
                    else if (f->barrier != line)
                        other = f->barrier;
                }
            }
            if (emu.error[0])
                return 1;
            if (waiting == 0)
                break;
            if (done > 0) {
                emu_fail("__syncthreads at line %d reached by only part of the block: %d "
                         "threads wait there, %d have returned", line, int(waiting),
                         int(done));
                return 1;
            }
            if (other >= 0) {
                emu_fail("threads of one block wait at different __syncthreads (lines %d and "
                         "%d)%s", line, other, 0);
                return 1;
            }
            for (size_t t = 0; t < nt; ++t)
                emu.fibers[t].state = FIBER_READY;
            emu.in_fiber = true;
        }
        emu.in_fiber = false;
    }
    return 0;
}

// -- kernel signatures: what each parameter takes, for the Python side's marshalling checks --
template <typename T> struct ArgCode;
template <> struct ArgCode<float> { static constexpr const char* s = "f4"; };
template <> struct ArgCode<double> { static constexpr const char* s = "f8"; };
template <> struct ArgCode<int> { static constexpr const char* s = "i4"; };
template <> struct ArgCode<unsigned int> { static constexpr const char* s = "u4"; };
template <> struct ArgCode<long long> { static constexpr const char* s = "i8"; };
template <> struct ArgCode<long> { static constexpr const char* s = "i8"; };
template <> struct ArgCode<unsigned long long> { static constexpr const char* s = "u8"; };
template <> struct ArgCode<unsigned long> { static constexpr const char* s = "u8"; };
template <> struct ArgCode<bool> { static constexpr const char* s = "b1"; };
template <> struct ArgCode<unsigned char> { static constexpr const char* s = "u1"; };
template <typename T> struct ArgCode<T*> {
    static constexpr const char* s = ArgCode<typename std::remove_cv<T>::type>::s;
};

template <typename T> const char* arg_code() {
    static char buf[8];
    snprintf(buf, sizeof buf, "%s%s", std::is_pointer<T>::value ? "*" : "",
             ArgCode<typename std::remove_cv<T>::type>::s);
    return buf;
}

template <typename... A>
const char* signature_of(void (*)(A...)) {
    static char buf[4096];
    buf[0] = 0;
    const char* parts[] = {arg_code<A>()..., ""};
    for (size_t i = 0; i < sizeof...(A); ++i) {
        if (i)
            strncat(buf, ",", sizeof buf - strlen(buf) - 1);
        strncat(buf, parts[i], sizeof buf - strlen(buf) - 1);
    }
    return buf;
}

template <typename... A> struct Call {
    void (*fn)(A...);
    void** args;
    template <size_t... I> void go(std::index_sequence<I...>) {
        fn(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
    }
    static void run(void* self) {
        static_cast<Call*>(self)->go(std::index_sequence_for<A...>{});
    }
};

template <typename... A>
int launch_kernel(void (*fn)(A...), const unsigned* geometry, void** args, int barriers,
                  int reverse, char* err, int errlen) {
    Call<A...> call{fn, args};
    netspec_dim3 grid{geometry[0], geometry[1], geometry[2]};
    netspec_dim3 block{geometry[3], geometry[4], geometry[5]};
    int rc = run_grid(grid, block, barriers != 0, reverse != 0, &Call<A...>::run, &call);
    if (rc && err && errlen > 0)
        snprintf(err, size_t(errlen), "%s", emu.error);
    return rc;
}

// -- CUDA's device functions, as the kernels use them ------------------------------------------
// float4 as CUDA declares it (16-byte aligned), so `*(const float4*)&p[i]` reads 4 floats at once
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

}  // namespace

// the CUDA words, as macros over the emulator's state
#define __global__
#define __device__ static inline
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// every __shared__ array goes in one section, which each block starts with NaN-filled
#define __shared__ static __attribute__((section("netspec_shared")))
#define __constant__ static const
#define __launch_bounds__(...)
#define threadIdx (emu.threadIdx)
#define blockIdx (emu.blockIdx)
#define blockDim (emu.blockDim)
#define gridDim (emu.gridDim)
#define warpSize 32
#define __syncthreads() barrier(__LINE__)
typedef netspec_uint3 uint3;
typedef netspec_dim3 dim3;

// what a GPU-only construct turns into: a compile error naming it
#define atomicAdd(...) NETSPEC_EMULATOR_HAS_NO_ATOMICS
#define __shfl_sync(...) NETSPEC_EMULATOR_HAS_NO_WARP_INTRINSICS
#define __shfl_down_sync(...) NETSPEC_EMULATOR_HAS_NO_WARP_INTRINSICS

// NETSPEC_EMU_EXPORT(kernel, uses_barriers): the two exported entry points of one kernel
#define NETSPEC_EMU_EXPORT(name, barriers)                                                    \
    extern "C" __attribute__((visibility("default"))) int netspec_launch_##name(              \
        const unsigned* geometry, void** args, int reverse, char* err, int errlen) {          \
        return launch_kernel(&name, geometry, args, barriers, reverse, err, errlen);          \
    }                                                                                         \
    extern "C" __attribute__((visibility("default"))) const char* netspec_signature_##name() { \
        return signature_of(&name);                                                           \
    }
