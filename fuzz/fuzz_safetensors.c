/* fuzz_safetensors.c — the validating safetensors reader (header JSON, dtypes,
 * shapes, offsets) on arbitrary files; every span it accepts is read end to end
 * so ASan sees an out-of-bounds span. */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char p[300];
    fz_path("t.safetensors", p, sizeof p);
    fz_write(p, d, n);
    st_sf_file *f;
    if (st_sf_open(p, &f) == ST_OK) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < f->n_tensors; i++) {
            const st_sf_tensor *t = &f->tensors[i];
            for (uint64_t b = 0; b < t->end - t->begin; b++) sink ^= t->data[b];
            (void)st_sf_numel(t);
        }
        (void)sink;
        st_sf_close(f);
    }
    return 0;
}
