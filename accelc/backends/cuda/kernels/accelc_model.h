/* accelc model library: C ABI version 1 (CUDA build). See docs/INTERNALS.md.
 * Return codes: 0 ok, 1 no usable GPU or the GPU cannot run this build, 2 weights mismatch,
 * 3 out of memory, 4 invalid argument, 5 CUDA error while running. */
#ifndef ACCELC_MODEL_H
#define ACCELC_MODEL_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef struct accelc_model accelc_model;
int accelc_abi_version(void);
const char* accelc_signature_json(void);
const char* accelc_variants(void);          /* SM architectures in the fatbin, e.g. "sm_90a" */
const char* accelc_select_variant(void);    /* the architecture this GPU runs, or NULL */
int accelc_create(const void* weights, size_t weights_size, int num_threads_ignored, accelc_model** out);
int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs);          /* host buffers */
int accelc_run_device(accelc_model* m, const void* const* d_inputs, void* const* d_outputs,
                      void* cuda_stream);   /* device buffers, asynchronous on the stream (NULL: model's) */
const char* accelc_model_variant(const accelc_model* m);
void accelc_destroy(accelc_model* m);
const char* accelc_last_error(void);
#ifdef __cplusplus
}
#endif
#endif
