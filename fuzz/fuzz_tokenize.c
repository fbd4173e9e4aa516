/* fuzz_tokenize.c — encode and decode of arbitrary bytes with a real trained
 * byte-level BPE (models/elastic/tokenizer.json when present, else the
 * synthetic model's). Byte 0 picks the mode: encode (with or without special
 * tokens) or decode the rest as little-endian int32 ids, valid or not. */
#include <unistd.h>

#include "fuzz_util.h"

static st_tokenizer *g_t;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_t) {
        char src[300], p[400];
        const char *shipped = "models/elastic/tokenizer.json";
        if (access(shipped, R_OK) == 0) snprintf(p, sizeof p, "%s", shipped);
        else snprintf(p, sizeof p, "%s/tokenizer.json", fz_synth_model("src", src, sizeof src));
        if (st_tokenizer_load(p, &g_t)) { fprintf(stderr, "%s\n", st_last_error()); abort(); }
    }
    if (!n) return 0;
    int mode = d[0] % 3;
    d++; n--;
    if (mode < 2) {
        int32_t *ids = NULL;
        int nid = 0;
        if (st_tokenize(g_t, (const char *)d, n, mode, &ids, &nid) == ST_OK) {
            char *out = NULL;
            if (st_detokenize(g_t, ids, nid, &out) == ST_OK) free(out);
        }
        free(ids);
    } else {
        int k = (int)(n / 4);
        int32_t *ids = malloc(sizeof *ids * (size_t)(k ? k : 1));
        if (!ids) abort();
        memcpy(ids, d, (size_t)k * 4);
        char buf[64];
        for (int i = 0; i < k; i++) (void)st_token_bytes(g_t, ids[i], buf, (int)sizeof buf);
        char *out = NULL;
        if (st_detokenize(g_t, ids, k, &out) == ST_OK) free(out);
        free(ids);
    }
    return 0;
}
