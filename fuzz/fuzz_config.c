/* fuzz_config.c — config.json (architecture keys, hybrid pattern, the
 * elastic block with its budgets) through st_model_load against the real
 * weights of the synthetic model; an accepted config has each of its budgets
 * resolved, by name and through the default. */
#include <errno.h>
#include <sys/stat.h>

#include "fuzz_util.h"

static char g_dir[300];

static void setup(void) {
    char src[300], p[400], q[400];
    fz_synth_model("src", src, sizeof src);
    fz_path("cfg", g_dir, sizeof g_dir);
    if (mkdir(g_dir, 0755) && errno != EEXIST) abort();
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    snprintf(q, sizeof q, "%s/model.safetensors", g_dir);
    if (symlink(p, q) && errno != EEXIST) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_dir[0]) setup();
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    fz_write(p, d, n);
    st_model *m;
    if (st_model_load(g_dir, &m) == ST_OK) {
        for (int i = -1; i < st_model_n_budgets(m); i++) {
            st_budget *b;
            const char *name = i < 0 ? st_model_default_budget(m) : st_model_budget_name(m, i);
            if (name && st_budget_by_name(m, name, &b) == ST_OK) st_budget_free(b);
        }
        st_model_free(m);
    }
    return 0;
}
