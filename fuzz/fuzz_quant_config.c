/*
 * fuzz_quant_config.c — hf_quant_config.json and config.json's
 * quantization_config as `starling slice` reads and rewrites them (the module
 * lists follow the slice: exclude_modules, quantized_layers, ignore). slice.c
 * is compiled into the harness for its file-static parser; the input is the
 * checkpoint's hf_quant_config.json, sliced at budget S.
 */
#include "../src/elastic/slice.c"
#include "fuzz_util.h"

static st_model *g_m;
static st_budget *g_b;
static char g_out[300];

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_m) {
        char src[300];
        if (st_model_load(fz_synth_model("src", src, sizeof src), &g_m) || st_budget_resolve(g_m, "S", &g_b)) abort();
        fz_path("qout", g_out, sizeof g_out);
        if (mkdir(g_out, 0755) && errno != EEXIST) abort();
    }
    char p[400];
    snprintf(p, sizeof p, "%s/hf_quant_config.json", st_model_dir(g_m));
    fz_write(p, d, n);
    (void)copy_quant_config(g_m, g_b, g_out);
    /* the same object as config.json's quantization_config */
    json_t *j = json_loadb((const char *)d, n, 0, NULL);
    if (j) {
        remap_quant(g_b, json_object_get(j, "quantization"));
        remap_quant(g_b, j);
        char *s = json_dumps(j, 0);
        free(s);
        json_decref(j);
    }
    return 0;
}
