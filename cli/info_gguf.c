/* info_gguf.c — `starling info -m FILE.gguf`: what a GGUF file holds (architecture,
 * hyper-parameters, tokenizer, tensors by type), read with the validating reader. */
#include "cli.h"
#include "io/gguf.h"

#include <stdlib.h>
#include <string.h>

int cli_info_gguf(const char *path);

static void print_kv(const st_gguf_kv *kv) {
    printf("  %-52s ", kv->key);
    if (kv->type == ST_GGUF_ARR) {
        printf("[%llu x %s]", (unsigned long long)kv->n, kv->arr_type == ST_GGUF_STR ? "string" : "number");
        if (kv->arr_type != ST_GGUF_STR && kv->arr_type != ST_GGUF_F32 && kv->n <= 64) {
            printf(" ");
            for (uint64_t i = 0; i < kv->n; i++) printf("%s%lld", i ? "," : "", (long long)st_gguf_arr_int(kv, i));
        }
    } else if (kv->type == ST_GGUF_STR) {
        uint64_t n;
        memcpy(&n, kv->val, 8);
        printf("\"%.*s\"%s", (int)(n > 60 ? 60 : n), (const char *)kv->val + 8, n > 60 ? "..." : "");
        if (n > 60) printf(" (%llu bytes)", (unsigned long long)n);
    } else if (kv->type == ST_GGUF_F32) {
        float f;
        memcpy(&f, kv->val, 4);
        printf("%g", (double)f);
    } else if (kv->type == ST_GGUF_BOOL) {
        printf("%s", kv->val[0] ? "true" : "false");
    } else {
        int64_t v = 0;
        size_t sz = kv->type == ST_GGUF_U64 || kv->type == ST_GGUF_I64 ? 8 : kv->type <= ST_GGUF_I8 ? 1 : kv->type <= ST_GGUF_I16 ? 2 : 4;
        memcpy(&v, kv->val, sz);
        if (kv->type == ST_GGUF_I32) v = (int32_t)v;
        printf("%lld", (long long)v);
    }
    printf("\n");
}

int cli_info_gguf(const char *path) {
    st_gguf *g;
    st_status rc = st_gguf_open(path, &g);
    if (rc) return cli_fail_st("info", rc);
    char *arch = st_gguf_str(g, "general.architecture");
    printf("gguf       %s (version %u)\n", path, g->version);
    printf("arch       %s\n\nkeys (%zu)\n", arch ? arch : "?", g->n_kv);
    free(arch);
    for (size_t i = 0; i < g->n_kv; i++) print_kv(&g->kv[i]);
    uint64_t bytes[64] = {0}, count[64] = {0}, params = 0;
    for (size_t i = 0; i < g->n_t; i++) {
        const st_gguf_tensor_info *t = &g->t[i];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->ne[d];
        params += (uint64_t)n;
        if (t->type >= 0 && t->type < 64) { bytes[t->type] += t->bytes; count[t->type]++; }
    }
    printf("\ntensors    %zu, %.2fM parameters\n", g->n_t, (double)params / 1e6);
    for (int k = 0; k < 64; k++)
        if (count[k]) printf("  %-6s %4llu tensors  %.2f MiB\n", st_ggml_type_name(k), (unsigned long long)count[k],
                             (double)bytes[k] / (1 << 20));
    for (size_t i = 0; i < g->n_t && i < 24; i++) {
        const st_gguf_tensor_info *t = &g->t[i];
        printf("  %-32s %-5s {", t->name, st_ggml_type_name(t->type));
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->ne[d]);
        printf("}\n");
    }
    if (g->n_t > 24) printf("  ... %zu more\n", g->n_t - 24);
    st_gguf_close(g);
    return 0;
}
