/* fuzz_tokenizer_json.c — tokenizer.json loading (vocab, merges, added
 * tokens, pre-tokenizer and normalizer settings); an accepted file encodes and
 * decodes a fixed text with and without special-token parsing. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char p[300];
    fz_path("tokenizer.json", p, sizeof p);
    fz_write(p, d, n);
    st_tokenizer *t;
    if (st_tokenizer_load(p, &t) == ST_OK) {
        static const char text[] = "Hello, world! <|im_start|>user\n12 + 35 = 47 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
        for (int sp = 0; sp < 2; sp++) {
            int32_t *ids = NULL;
            int nid = 0;
            if (st_tokenize(t, text, sizeof text - 1, sp, &ids, &nid) == ST_OK) {
                char *out = NULL;
                if (st_detokenize(t, ids, nid, &out) == ST_OK) free(out);
            }
            free(ids);
        }
        st_tokenizer_free(t);
    }
    return 0;
}
