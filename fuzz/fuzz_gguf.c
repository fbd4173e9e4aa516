/* fuzz_gguf.c — the validating GGUF reader (header, key/value pairs and
 * arrays, tensor infos, alignment, offsets) on arbitrary files; every value
 * and tensor it accepts is read back through the accessors `starling info`
 * uses, so ASan sees any span the checks let through. */
#include "fuzz_util.h"
#include "io/gguf.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char p[300];
    fz_path("t.gguf", p, sizeof p);
    fz_write(p, d, n);
    st_gguf *g;
    if (st_gguf_open(p, &g) == ST_OK) {
        for (size_t i = 0; i < g->n_kv; i++) {
            const st_gguf_kv *kv = &g->kv[i];
            free(st_gguf_str(g, kv->key));
            (void)st_gguf_int(g, kv->key, 0);
            for (uint64_t k = 0; k < kv->n && k < 64; k++) {
                free(st_gguf_arr_str(kv, k));
                (void)st_gguf_arr_int(kv, k);
            }
            if (kv->n) { free(st_gguf_arr_str(kv, kv->n - 1)); (void)st_gguf_arr_int(kv, kv->n - 1); }
        }
        for (size_t i = 0; i < g->n_t; i++) {
            float *f = NULL;
            if (g->t[i].bytes <= (1u << 20) && st_gguf_tensor_f32(&g->t[i], &f) == ST_OK) free(f);
            (void)st_gguf_find_tensor(g, g->t[i].name);
        }
        st_gguf_close(g);
    }
    return 0;
}
