/* Runs an accelc model library from C, without Python: the deployment path of the C ABI.
 *
 * Build against an artifact saved as a directory (accelc compile ... --dir -o mlp_dir):
 *   gcc -O2 -I mlp_dir/include examples/c_api/main.c mlp_dir/model.so -Wl,-rpath,'$ORIGIN' -o run_mlp
 *   ./run_mlp mlp_dir/weights.bin input.f32
 *
 * input.f32 holds the first input as raw float32 values (x.astype(np.float32).tofile("input.f32")).
 * The program prints the first output, one value per line. For brevity it handles models with one
 * float32 input and float32 outputs; the sizes come from accelc_signature_json().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accelc_model.h"

/* Number of elements of port `index` in the "inputs" or "outputs" list of the signature JSON. */
static size_t port_elements(const char* json, const char* list, int index) {
    const char* p = strstr(json, list);
    for (int i = 0; p && i <= index; ++i) p = strstr(p + 1, "\"shape\"");
    if (!p) return 0;
    p = strchr(p, '[');
    size_t n = 1;
    for (++p; *p && *p != ']';) {
        char* end;
        long d = strtol(p, &end, 10);
        if (end == p) { ++p; continue; }
        n *= (size_t)d;
        p = end;
    }
    return n;
}

static void* read_file(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void* data = malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(data, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", path); exit(1); }
    fclose(f);
    *size = (size_t)n;
    return data;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s WEIGHTS.bin INPUT.f32\n", argv[0]);
        return 2;
    }
    if (accelc_abi_version() != 1) { fprintf(stderr, "unexpected ABI version\n"); return 1; }
    const char* sig = accelc_signature_json();
    size_t weights_size, input_size;
    void* weights = read_file(argv[1], &weights_size);
    float* input = (float*)read_file(argv[2], &input_size);
    size_t in_n = port_elements(sig, "\"inputs\"", 0), out_n = port_elements(strstr(sig, "\"outputs\""), "\"outputs\"", 0);
    if (input_size != in_n * sizeof(float)) {
        fprintf(stderr, "input has %zu bytes, the model expects %zu float32 values\n", input_size, in_n);
        return 1;
    }
    accelc_model* model = NULL;
    if (accelc_create(weights, weights_size, 0, &model) != 0) {
        fprintf(stderr, "accelc_create failed: %s\n", accelc_last_error());
        return 1;
    }
    free(weights);  /* accelc_create keeps its own copy */
    float* output = (float*)malloc(out_n * sizeof(float));
    const void* inputs[1] = {input};
    void* outputs[1] = {output};
    if (accelc_run(model, inputs, outputs) != 0) {
        fprintf(stderr, "accelc_run failed: %s\n", accelc_last_error());
        return 1;
    }
    fprintf(stderr, "variant %s, %zu outputs values\n", accelc_model_variant(model), out_n);
    for (size_t i = 0; i < out_n; ++i) printf("%.9g\n", output[i]);
    accelc_destroy(model);
    free(output);
    free(input);
    return 0;
}
