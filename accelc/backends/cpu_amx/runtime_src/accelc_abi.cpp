// accelc CPU runtime: the C ABI of a built model library (ABI version 1, see include/accelc_model.h).
//
// Compiled with baseline x86-64 flags only: this file runs before we know which ISA the CPU has. It
// checks the CPU (cpuid) and the OS (XCR0 via xgetbv: AVX-512 and AMX register state enabled), picks the
// best ISA variant built into the library, verifies and copies the weights, owns the activation arena and
// calls the chosen variant's generated `run`. Model facts (variants, signature, sizes, checksum, the
// labels of the graph nodes) come from the generated accelc_model_config.h.
//
// Profiling: each model owns kAccelcNumNodes second counters. While profiling is on, accelc_run hands
// them to the variant's `run`, which adds each node block's wall time; otherwise it passes null. The
// counters live in the model, not in the variant namespaces, so two models of one library never mix
// their numbers and a model still runs from one thread at a time without locks.
#include <cpuid.h>
#include <omp.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "accelc_model_config.h"
#include "accelc_weights_checksum.h"

#define ACCELC_EXPORT extern "C" __attribute__((visibility("default")))

// Each variant namespace provides these two functions (generated model.cpp); node_seconds is null or
// kAccelcNumNodes counters that run adds each node's seconds to.
#define ACCELC_DECLARE_VARIANT(v)                                                                     \
  namespace accelc_##v {                                                                              \
  int prepare(const char** reason);                                                                   \
  int run(const void* const* inputs, void* const* outputs, unsigned char* arena, const unsigned char* weights, \
          double* node_seconds);                                                                      \
  }
ACCELC_FOR_EACH_VARIANT(ACCELC_DECLARE_VARIANT)
#undef ACCELC_DECLARE_VARIANT

namespace {

thread_local char g_last_error[512] = "";

int fail(int code, const char* fmt, const char* arg = "") {
  std::snprintf(g_last_error, sizeof g_last_error, fmt, arg);
  return code;
}

// ---- CPU feature detection -------------------------------------------------------------------------------
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi1 = false, bmi2 = false, lzcnt = false, movbe = false;
  bool avx512f = false, avx512bw = false, avx512cd = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false, avx512_vnni = false, amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;
};

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.movbe = (c >> 22) & 1;
  f.f16c = (c >> 29) & 1;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const uint64_t xcr0 = (uint64_t(hi) << 32) | lo;
    f.os_avx = avx && (xcr0 & 0x6) == 0x6;                       // SSE + AVX state
    f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;             // opmask + ZMM_Hi256 + Hi16_ZMM
    f.os_amx = (xcr0 & 0x60000) == 0x60000;                      // XTILECFG + XTILEDATA
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.bmi1 = (b >> 3) & 1;
    f.avx2 = (b >> 5) & 1;
    f.bmi2 = (b >> 8) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512cd = (b >> 28) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512_vnni = (c >> 11) & 1;
    f.amx_bf16 = (d >> 22) & 1;
    f.amx_tile = (d >> 24) & 1;
    f.amx_int8 = (d >> 25) & 1;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = (a >> 5) & 1;
  }
  if (__get_cpuid(0x80000001, &a, &b, &c, &d)) f.lzcnt = (c >> 5) & 1;
  return f;
}

// Appends the names of the features `variant` needs and this CPU/OS lacks; returns true when none is missing.
bool variant_runs(const char* variant, const CpuFeatures& f, char* missing, size_t cap) {
  missing[0] = '\0';
  auto need = [&](bool ok, const char* name) {
    if (ok) return;
    if (missing[0]) std::strncat(missing, " ", cap - std::strlen(missing) - 1);
    std::strncat(missing, name, cap - std::strlen(missing) - 1);
  };
  const bool v3 = true, v4 = std::strcmp(variant, "avx512") == 0 || std::strcmp(variant, "amx") == 0;
  const bool bf16 = v4;   // the avx512 and amx variants are built with -mavx512bf16
  const bool amx = std::strcmp(variant, "amx") == 0;
  if (v3) {
    need(f.avx2, "avx2"); need(f.fma, "fma"); need(f.f16c, "f16c"); need(f.bmi1, "bmi1"); need(f.bmi2, "bmi2");
    need(f.lzcnt, "lzcnt"); need(f.movbe, "movbe"); need(f.os_avx, "os-avx-state");
  }
  if (v4) {
    need(f.avx512f, "avx512f"); need(f.avx512bw, "avx512bw"); need(f.avx512cd, "avx512cd");
    need(f.avx512dq, "avx512dq"); need(f.avx512vl, "avx512vl"); need(f.os_avx512, "os-avx512-state");
  }
  if (bf16) need(f.avx512_bf16, "avx512_bf16");
  if (amx) {
    need(f.avx512_vnni, "avx512_vnni"); need(f.amx_tile, "amx_tile");
    need(f.amx_bf16, "amx_bf16"); need(f.amx_int8, "amx_int8"); need(f.os_amx, "os-amx-state");
  }
  return missing[0] == '\0';
}

// ---- variants built into this library ------------------------------------------------------------------
using RunFn = int (*)(const void* const*, void* const*, unsigned char*, const unsigned char*, double*);
using PrepareFn = int (*)(const char**);
struct Variant { const char* name; RunFn run; PrepareFn prepare; };

const Variant kVariants[] = {
#define ACCELC_VARIANT_ENTRY(v) {#v, &accelc_##v::run, &accelc_##v::prepare},
    ACCELC_FOR_EACH_VARIANT(ACCELC_VARIANT_ENTRY)
#undef ACCELC_VARIANT_ENTRY
};
constexpr int kNumVariants = int(sizeof(kVariants) / sizeof(kVariants[0]));

void* aligned_alloc_bytes(size_t n) {
  if (n == 0) n = 64;
  void* p = nullptr;
  if (posix_memalign(&p, 64, (n + 63) / 64 * 64) != 0) return nullptr;
  return p;
}

}  // namespace

// Called by the support kernels (accelc_ops.cpp) to explain a non-zero return.
extern "C" void accelc_internal_set_error(const char* message) {
  std::snprintf(g_last_error, sizeof g_last_error, "%s", message);
}

struct accelc_model {
  const Variant* variant;
  unsigned char* weights;
  unsigned char* arena;
  int threads;
  double* node_seconds;       // kAccelcNumNodes counters (at least one element)
  bool profiling;
  long long profile_runs;     // accelc_run calls while profiling
  double profile_run_seconds; // wall time of those calls
};

ACCELC_EXPORT int accelc_abi_version(void) { return 1; }
ACCELC_EXPORT const char* accelc_signature_json(void) { return kAccelcSignatureJson; }
ACCELC_EXPORT const char* accelc_variants(void) { return kAccelcVariantList; }

ACCELC_EXPORT const char* accelc_select_variant(void) {
  const CpuFeatures f = detect();
  char missing[256];
  for (int i = 0; i < kNumVariants; ++i)
    if (variant_runs(kVariants[i].name, f, missing, sizeof missing)) return kVariants[i].name;
  return nullptr;
}

ACCELC_EXPORT int accelc_create(const void* weights, size_t weights_size, int num_threads, accelc_model** out) {
  if (!out) return fail(4, "accelc_create: out is NULL%s");
  *out = nullptr;
  if (weights_size != kAccelcWeightsBytes) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "%zu bytes given, the model needs %llu", weights_size,
                  (unsigned long long)kAccelcWeightsBytes);
    return fail(2, "weights size mismatch: %s (use the weights.bin built with this library)", msg);
  }
  if (weights_size && !weights) return fail(4, "accelc_create: weights is NULL%s");
  if (weights_size && weights_checksum(static_cast<const unsigned char*>(weights), weights_size) != kAccelcWeightsChecksum)
    return fail(2, "weights checksum mismatch: %s", "weights.bin does not belong to this library or is damaged");
  if (num_threads < 0) return fail(4, "accelc_create: num_threads must be >= 0 (0 = all cores)%s");

  // best variant this CPU runs and whose one-time setup (AMX tile permission) succeeds
  const CpuFeatures f = detect();
  const Variant* chosen = nullptr;
  char reasons[400] = "";
  for (int i = 0; i < kNumVariants && !chosen; ++i) {
    char missing[256];
    char line[300];
    if (!variant_runs(kVariants[i].name, f, missing, sizeof missing)) {
      std::snprintf(line, sizeof line, "%s%s needs %s", reasons[0] ? "; " : "", kVariants[i].name, missing);
    } else {
      const char* why = nullptr;
      if (kVariants[i].prepare(&why) == 0) { chosen = &kVariants[i]; break; }
      std::snprintf(line, sizeof line, "%s%s: %s", reasons[0] ? "; " : "", kVariants[i].name, why ? why : "setup failed");
    }
    std::strncat(reasons, line, sizeof reasons - std::strlen(reasons) - 1);
  }
  if (!chosen) return fail(1, "this CPU cannot run any ISA variant of the model (%s)", reasons);

  accelc_model* m = new (std::nothrow) accelc_model{chosen, nullptr, nullptr, num_threads, nullptr, false, 0, 0.0};
  if (!m) return fail(3, "out of memory allocating the model%s");
  m->weights = static_cast<unsigned char*>(aligned_alloc_bytes(weights_size));
  m->arena = static_cast<unsigned char*>(aligned_alloc_bytes(kAccelcArenaBytes));
  m->node_seconds = static_cast<double*>(std::calloc(kAccelcNumNodes > 0 ? kAccelcNumNodes : 1, sizeof(double)));
  if (!m->weights || !m->arena || !m->node_seconds) {
    std::free(m->weights); std::free(m->arena); std::free(m->node_seconds); delete m;
    char msg[64];
    std::snprintf(msg, sizeof msg, "%llu", (unsigned long long)(weights_size + kAccelcArenaBytes));
    return fail(3, "out of memory allocating %s bytes of weights and activations", msg);
  }
  if (weights_size) std::memcpy(m->weights, weights, weights_size);
  *out = m;
  return 0;
}

ACCELC_EXPORT int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs) {
  if (!m) return fail(4, "accelc_run: model is NULL%s");
  if ((kAccelcNumInputs && !inputs) || (kAccelcNumOutputs && !outputs))
    return fail(4, "accelc_run: inputs or outputs array is NULL%s");
  for (int i = 0; i < kAccelcNumInputs; ++i)
    if (!inputs[i]) return fail(4, "accelc_run: input %s is NULL", kAccelcInputNames[i]);
  for (int i = 0; i < kAccelcNumOutputs; ++i)
    if (!outputs[i]) return fail(4, "accelc_run: output %s is NULL", kAccelcOutputNames[i]);
  if (m->threads > 0) omp_set_num_threads(m->threads);
  if (!m->profiling) return m->variant->run(inputs, outputs, m->arena, m->weights, nullptr);
  const double start = omp_get_wtime();
  const int rc = m->variant->run(inputs, outputs, m->arena, m->weights, m->node_seconds);
  m->profile_run_seconds += omp_get_wtime() - start;
  ++m->profile_runs;
  return rc;
}

ACCELC_EXPORT const char* accelc_model_variant(const accelc_model* m) { return m ? m->variant->name : nullptr; }

ACCELC_EXPORT void accelc_destroy(accelc_model* m) {
  if (!m) return;
  std::free(m->weights);
  std::free(m->arena);
  std::free(m->node_seconds);
  delete m;
}

ACCELC_EXPORT const char* accelc_last_error(void) { return g_last_error; }

// ---- profiling ---------------------------------------------------------------------------------------------
ACCELC_EXPORT int accelc_profile_count(void) { return kAccelcNumNodes; }

// Entry i of a per-node table, or null with error 4 naming the function when i is out of range.
static const char* node_entry(const char* const* table, int i, const char* fn) {
  if (i < 0 || i >= kAccelcNumNodes) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "%s: %d is not a node index (the model has %d nodes)", fn, i, kAccelcNumNodes);
    fail(4, "%s", msg);
    return nullptr;
  }
  return table[i];
}

ACCELC_EXPORT const char* accelc_profile_node(int i) { return node_entry(kAccelcNodeLabels, i, "accelc_profile_node"); }

ACCELC_EXPORT const char* accelc_profile_node_op(int i) {
  return node_entry(kAccelcNodeOps, i, "accelc_profile_node_op");
}

ACCELC_EXPORT int accelc_profile_enable(accelc_model* m, int on) {
  if (!m) return fail(4, "accelc_profile_enable: model is NULL%s");
  if (on != 0 && on != 1) return fail(4, "accelc_profile_enable: on must be 0 (stop) or 1 (reset and start)%s");
  if (on) {
    std::memset(m->node_seconds, 0, sizeof(double) * (kAccelcNumNodes > 0 ? kAccelcNumNodes : 1));
    m->profile_runs = 0;
    m->profile_run_seconds = 0.0;
  }
  m->profiling = on != 0;
  return 0;
}

ACCELC_EXPORT int accelc_profile_read(const accelc_model* m, double* seconds, int capacity, long long* runs,
                                      double* run_seconds) {
  if (!m) return fail(4, "accelc_profile_read: model is NULL%s");
  if (capacity < kAccelcNumNodes) {
    char msg[96];
    std::snprintf(msg, sizeof msg, "capacity %d, the model has %d nodes", capacity, kAccelcNumNodes);
    return fail(4, "accelc_profile_read: seconds is too small (%s; see accelc_profile_count)", msg);
  }
  if (kAccelcNumNodes > 0 && !seconds) return fail(4, "accelc_profile_read: seconds is NULL%s");
  if (kAccelcNumNodes > 0) std::memcpy(seconds, m->node_seconds, sizeof(double) * kAccelcNumNodes);
  if (runs) *runs = m->profile_runs;
  if (run_seconds) *run_seconds = m->profile_run_seconds;
  return 0;
}
