/* fuzz_index.c — model.safetensors.index.json: a checkpoint dir whose two
 * shards are real (the synthetic model sliced into ~1 MB shards) gets an
 * arbitrary index, then st_model_load. */
#include "elastic/slice.h"
#include "fuzz_util.h"

static char g_dir[300];

static void setup(void) {
    char src[300];
    fz_synth_model("src", src, sizeof src);
    st_model *m;
    st_budget *b;
    fz_path("sharded", g_dir, sizeof g_dir);
    st_slice_opts o = {.shard_bytes = 1000000}; /* the seed index: slice --shard-size 0.001 */
    if (st_model_load(src, &m) || st_budget_resolve(m, "full", &b) || st_slice(m, b, g_dir, &o)) {
        fprintf(stderr, "fuzz fixture: %s\n", st_last_error());
        abort();
    }
    st_budget_free(b);
    st_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_dir[0]) setup();
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", g_dir);
    fz_write(p, d, n);
    st_model *m;
    if (st_model_load(g_dir, &m) == ST_OK) st_model_free(m);
    return 0;
}
