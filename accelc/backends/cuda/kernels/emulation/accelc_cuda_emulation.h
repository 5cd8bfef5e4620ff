// accelc CUDA emulation: runs the generated CUDA C++ on the host CPU, built with g++, so that the numbers
// of every generated kernel can be checked against the reference interpreter on a machine without a GPU.
//
// It stands in for the CUDA headers the generated code includes (the stub cuda_runtime.h, cuda_bf16.h,
// cuda_fp16.h and math_constants.h next to this file include it), and provides:
// - the CUDA keywords as plain C++ (`__shared__` becomes `static`: one block runs at a time, so a static
//   local is exactly the block's shared memory);
// - __half / __nv_bfloat16 with CUDA's round-to-nearest-even conversions;
// - ACCELC_LAUNCH, which runs a kernel's blocks one after another. Every thread of a block is a fiber
//   (ucontext) with its own stack; a fiber runs until it waits at __syncthreads (all live threads of the
//   block must arrive) or at a warp-level operation (__syncwarp, __shfl_*_sync: all live lanes of its
//   warp). Threads that wait at different kinds of barrier are a divergence bug on a GPU too; the launch
//   fails with a message naming the kernel instead of hanging;
// - launch checks a GPU would make (block size, grid limits) and cudaGetLastError.
// - nvcuda::wmma (accelc_emu_wmma.h, through the stub mma.h), with fragments spread over the lanes.
// What it does not model: timing, memory races between threads that a missing barrier would expose on a
// GPU (threads of a block run in a fixed order), and the CUTLASS GEMMs (accelc_emu_gemm.h computes what
// their arguments ask for instead).
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

#define ACCELC_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// ---- runtime types ---------------------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
};
typedef struct accelc_emu_stream* cudaStream_t;

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// the built-in indices of the thread the emulator is running
inline uint3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0};
inline dim3 blockDim, gridDim;

namespace accelc_emu {
inline cudaError_t g_last_error = cudaSuccess;
inline char g_message[512] = "";
}  // namespace accelc_emu

inline cudaError_t cudaGetLastError() {
  cudaError_t e = accelc_emu::g_last_error;
  accelc_emu::g_last_error = cudaSuccess;
  return e;
}

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

// ---- 16-bit floats ---------------------------------------------------------------------------------
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f);
  operator float() const;
};
struct __half {
  uint16_t bits;
  __half() = default;
  __half(float f);
  operator float() const;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 h;
  if (std::isnan(f)) {
    h.bits = uint16_t((u >> 16) | 0x0040u);   // quiet NaN, sign kept
  } else {
    u += 0x7FFFu + ((u >> 16) & 1u);          // round to nearest, ties to even
    h.bits = uint16_t(u >> 16);
  }
  return h;
}
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return static_cast<float>(v);
}
inline __half __float2half_rn(float f) {
  const _Float16 v = static_cast<_Float16>(f);   // IEEE round to nearest even
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}
inline __nv_bfloat16::__nv_bfloat16(float f) : bits(__float2bfloat16_rn(f).bits) {}
inline __nv_bfloat16::operator float() const { return __bfloat162float(*this); }
inline __half::__half(float f) : bits(__float2half_rn(f).bits) {}
inline __half::operator float() const { return __half2float(*this); }

// ---- math intrinsics -----------------------------------------------------------------------------------
#define CUDART_INF_F HUGE_VALF
#define CUDART_NAN_F NAN
#define CUDART_INF HUGE_VAL
#define CUDART_NAN static_cast<double>(NAN)
#define CUDART_PI_F 3.141592654f

// CUDA declares these in the global namespace for device code
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;
#define ACCELC_EMU_MINMAX(T)                               \
  inline T min(T a, T b) { return a < b ? a : b; } \
  inline T max(T a, T b) { return a > b ? a : b; }
ACCELC_EMU_MINMAX(int)
ACCELC_EMU_MINMAX(unsigned)
ACCELC_EMU_MINMAX(long)
ACCELC_EMU_MINMAX(unsigned long)
ACCELC_EMU_MINMAX(long long)
ACCELC_EMU_MINMAX(unsigned long long)
ACCELC_EMU_MINMAX(float)
ACCELC_EMU_MINMAX(double)
#undef ACCELC_EMU_MINMAX

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }

namespace accelc_emu {

// ---- the scheduler ---------------------------------------------------------------------------------------
enum class Wait : uint8_t { Ready, Block, Warp, Done };

constexpr size_t kStackBytes = 256 * 1024;

struct Scheduler {
  std::vector<ucontext_t> fibers;
  std::vector<char*> stacks;           // kept for the life of the process, reused by every launch
  std::vector<Wait> wait;
  std::vector<uint64_t> lane_values;   // __shfl_*_sync exchange slots, one per thread
  std::vector<const void*> wmma_slots; // wmma::mma_sync operand fragments, three per thread
  ucontext_t main{};
  void (*body)(const void*) = nullptr; // runs the kernel for the current thread
  const void* launch = nullptr;        // ... with the arguments of this launch
  int threads = 0, current = 0;
  const char* kernel = "";             // the kernel being run
  cudaError_t fault = cudaSuccess;     // the first error a thread of this launch raised (fault())
};

inline Scheduler& scheduler() {
  static Scheduler s;
  return s;
}

inline void fiber_main() {
  Scheduler& s = scheduler();
  s.body(s.launch);
  s.wait[s.current] = Wait::Done;   // returning resumes s.main (uc_link)
}

// Suspends the running thread until the barrier of kind `w` it waits at is complete.
inline void suspend(Wait w) {
  Scheduler& s = scheduler();
  const int me = s.current;
  s.wait[me] = w;
  swapcontext(&s.fibers[me], &s.main);
}

inline void set_thread(int t) {
  threadIdx.x = t % blockDim.x;
  threadIdx.y = (t / blockDim.x) % blockDim.y;
  threadIdx.z = t / (blockDim.x * blockDim.y);
}

// Runs one block of `threads` fibers to completion; false (with g_message) when its threads wait at
// barriers that can never complete.
inline bool run_block(const char* kernel) {
  Scheduler& s = scheduler();
  const int n = s.threads;
  for (int t = 0; t < n; ++t) {
    getcontext(&s.fibers[t]);
    s.fibers[t].uc_stack.ss_sp = s.stacks[t];
    s.fibers[t].uc_stack.ss_size = kStackBytes;
    s.fibers[t].uc_link = &s.main;
    makecontext(&s.fibers[t], fiber_main, 0);
    s.wait[t] = Wait::Ready;
  }
  for (;;) {
    for (int t = 0; t < n; ++t) {
      if (s.wait[t] != Wait::Ready) continue;
      s.current = t;
      set_thread(t);
      swapcontext(&s.main, &s.fibers[t]);
    }
    int live = 0, at_block = 0;
    for (int t = 0; t < n; ++t) {
      live += s.wait[t] != Wait::Done;
      at_block += s.wait[t] == Wait::Block;
    }
    if (live == 0) return true;
    bool released = false;
    if (at_block == live) {
      for (int t = 0; t < n; ++t)
        if (s.wait[t] == Wait::Block) s.wait[t] = Wait::Ready;
      released = true;
    } else {
      for (int w0 = 0; w0 < n; w0 += 32) {
        const int w1 = w0 + 32 < n ? w0 + 32 : n;
        int lanes = 0, at_warp = 0;
        for (int t = w0; t < w1; ++t) {
          lanes += s.wait[t] != Wait::Done;
          at_warp += s.wait[t] == Wait::Warp;
        }
        if (lanes && at_warp == lanes) {
          for (int t = w0; t < w1; ++t)
            if (s.wait[t] == Wait::Warp) s.wait[t] = Wait::Ready;
          released = true;
        }
      }
    }
    if (!released) {
      std::snprintf(g_message, sizeof g_message,
                    "kernel %s, block (%u, %u, %u): %d of %d live threads wait at __syncthreads while the others "
                    "wait at a warp-level operation (divergent barrier)", kernel, blockIdx.x, blockIdx.y,
                    blockIdx.z, at_block, live);
      return false;
    }
  }
}

inline void fail(cudaError_t e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void fail(cudaError_t e, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_message, sizeof g_message, fmt, ap);
  va_end(ap);
  g_last_error = e;
}

// An error raised by the running thread (a misuse a GPU would fault on): the first one of a launch is
// kept, with the kernel, block and thread; the launch stops after the current block.
inline void fault(cudaError_t e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void fault(cudaError_t e, const char* fmt, ...) {
  Scheduler& s = scheduler();
  if (s.fault != cudaSuccess) return;
  s.fault = e;
  const int n = std::snprintf(g_message, sizeof g_message, "kernel %s, block (%u, %u, %u), thread %d: ", s.kernel,
                              blockIdx.x, blockIdx.y, blockIdx.z, s.current);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && n < (int)sizeof g_message) std::vsnprintf(g_message + n, sizeof g_message - n, fmt, ap);
  va_end(ap);
}

// ACCELC_LAUNCH(kernel, grid, block, shmem, stream)(args...): checks the configuration like the driver
// does, then runs every block.
template <typename... Params>
struct Launch {
  const char* name;
  void (*kernel)(Params...);
  dim3 grid, block;
  size_t shmem;

  template <typename... Args>
  void operator()(Args&&... args) const {
    const long long threads = (long long)block.x * block.y * block.z;
    if (threads < 1 || threads > 1024 || block.z > 64)
      return fail(cudaErrorInvalidConfiguration, "kernel %s: block (%u, %u, %u) has %lld threads (1..1024 "
                  "allowed, z at most 64)", name, block.x, block.y, block.z, threads);
    if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
      return fail(cudaErrorInvalidConfiguration, "kernel %s: grid (%u, %u, %u) is outside the CUDA limits",
                  name, grid.x, grid.y, grid.z);
    if (shmem)
      return fail(cudaErrorInvalidConfiguration, "kernel %s: %zu bytes of dynamic shared memory (the emulator "
                  "supports static __shared__ only)", name, shmem);
    Scheduler& s = scheduler();
    s.threads = int(threads);
    while ((int)s.stacks.size() < s.threads) s.stacks.push_back(new char[kStackBytes]);
    s.fibers.resize(s.stacks.size());
    s.wait.resize(s.stacks.size());
    s.lane_values.resize(s.stacks.size());
    s.wmma_slots.resize(3 * s.stacks.size());
    blockDim = block;
    gridDim = grid;
    struct Bound {        // the kernel and this launch's arguments, called by every thread
      void (*kernel)(Params...);
      std::tuple<Args&...> args;
      static void call(const void* self) {
        const Bound& b = *static_cast<const Bound*>(self);
        std::apply([&](auto&... a) { b.kernel(a...); }, b.args);
      }
    } bound{kernel, std::tuple<Args&...>(args...)};
    s.body = &Bound::call;
    s.launch = &bound;
    s.kernel = name;
    s.fault = cudaSuccess;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = uint3{x, y, z};
          if (!run_block(name)) {
            g_last_error = cudaErrorLaunchFailure;
            return;
          }
          if (s.fault != cudaSuccess) {
            g_last_error = s.fault;
            return;
          }
        }
  }
};

template <typename... Params>
Launch<Params...> launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem) {
  return Launch<Params...>{name, kernel, grid, block, shmem};
}

template <typename T> inline T exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "__shfl of a value wider than 8 bytes");
  Scheduler& s = scheduler();
  const int me = s.current;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  s.lane_values[me] = bits;
  suspend(Wait::Warp);              // every lane has published its value
  int src = (me & ~31) + src_lane;
  if (src >= s.threads) src = me;   // a lane past the end of the block: the caller's own value
  T out;
  std::memcpy(&out, &s.lane_values[src], sizeof(T));
  suspend(Wait::Warp);              // every lane has read before the slots are reused
  return out;
}

}  // namespace accelc_emu

#define ACCELC_LAUNCH(kernel, grid, block, shmem, stream) ::accelc_emu::launch(#kernel, kernel, grid, block, shmem)

inline void __syncthreads() { accelc_emu::suspend(accelc_emu::Wait::Block); }
inline void __syncwarp(unsigned = 0xffffffffu) { accelc_emu::suspend(accelc_emu::Wait::Warp); }

// Segments of `width` lanes, as on the GPU; mask is taken as the full warp (the generated code uses no other).
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  const int lane = accelc_emu::scheduler().current & 31;
  const int src = lane ^ lane_mask;
  return accelc_emu::exchange(v, (src / width == lane / width) ? src : lane);
}
template <typename T> inline T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  const int lane = accelc_emu::scheduler().current & 31;
  return accelc_emu::exchange(v, (lane / width) * width + (src_lane % width));
}
template <typename T> inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = accelc_emu::scheduler().current & 31;
  const int src = lane + int(delta);
  return accelc_emu::exchange(v, (src / width == lane / width) ? src : lane);
}
template <typename T> inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = accelc_emu::scheduler().current & 31;
  const int src = lane - int(delta);
  return accelc_emu::exchange(v, (src >= 0 && src / width == lane / width) ? src : lane);
}
