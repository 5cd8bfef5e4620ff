/* accelc model library: C ABI version 1 (CUDA build). See docs/INTERNALS.md.
 * Return codes: 0 ok, 1 no usable GPU or the GPU cannot run this build, 2 weights mismatch,
 * 3 out of memory, 4 invalid argument, 5 CUDA error while running (accelc_last_error() says which).
 *
 * Models: accelc_create uploads the weights to the current GPU and allocates the model's own device
 * arena, internal stream, event and (from the second run on) CUDA graph. Nothing is shared between
 * models: any number of models, of this library or of others, may live in one process, and
 * accelc_destroy(m) frees only m (after waiting for m's last run). A model is run from one host thread
 * at a time.
 *
 * accelc_run (host buffers): runs on the model's internal stream and returns when the outputs are
 * written (synchronous).
 *
 * accelc_run_device (device buffers on the model's GPU, dense, in signature order and dtypes; a host
 * pointer or another GPU's memory is refused with code 4):
 * stream semantics like a cuBLAS call on a user stream. ALL of the run's GPU work (copying the inputs
 * into the model's arena, the kernels or the CUDA graph launch, copying the outputs out) is enqueued on
 * `cuda_stream` (a cudaStream_t; NULL is the legacy default stream, cudaStreamPerThread works too) and
 * the call returns without synchronising. The outputs are ready, and the inputs may be overwritten, once
 * that stream has passed the call: cudaStreamSynchronize(cuda_stream), an event recorded on it after the
 * call, or later work on that stream. Events recorded on `cuda_stream` around the call bracket the whole
 * run. The CUDA graph is captured on the model's internal stream and launched on `cuda_stream`.
 * Consecutive runs of one model (which share its arena) are ordered on the device: each run first
 * waits for the model's previous run, whatever stream it was enqueued on; the caller needs no extra
 * synchronisation between runs. The call may be captured into the caller's own CUDA graph. */
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
int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs);   /* host buffers, synchronous */
int accelc_run_device(accelc_model* m, const void* const* d_inputs, void* const* d_outputs,
                      void* cuda_stream);   /* device buffers; asynchronous, all work on cuda_stream (NULL: legacy default stream) */
const char* accelc_model_variant(const accelc_model* m);
int accelc_model_device(const accelc_model* m);     /* the CUDA device the model was created on */
void accelc_destroy(accelc_model* m);       /* waits for m's last run, frees m only */
const char* accelc_last_error(void);        /* thread-local message after a non-zero return */
#ifdef __cplusplus
}
#endif
#endif
