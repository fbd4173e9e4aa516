/* fuzz_budget.c — budget specs as `--budget` and the budget files take them:
 * names, "key=value,..." widths, "NAME:key=value" refinements, JSON objects;
 * an accepted spec becomes a budget view on the synthetic model. */
#include <jansson.h>

#include "fuzz_util.h"
#include "model/model.h"

static st_model *g_m;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_m) {
        char src[300];
        if (st_model_load(fz_synth_model("src", src, sizeof src), &g_m)) abort();
    }
    char *s = fz_str(d, n);
    st_budget *b;
    if (n && s[0] == '{') { /* a budget file's JSON */
        json_t *j = json_loadb((const char *)d, n, 0, NULL);
        st_widths w = {0};
        if (j && st_widths_from_json(&w, j, "fuzz") == ST_OK && st_budget_new(g_m, &w, &b) == ST_OK) st_budget_free(b);
        json_decref(j);
    } else if (!strchr(s, '@')) { /* '@FILE' reads a file: not this target's input */
        if (st_budget_resolve(g_m, s, &b) == ST_OK) st_budget_free(b);
        st_widths w = {0};
        (void)st_widths_parse(&w, s);
    }
    free(s);
    return 0;
}
