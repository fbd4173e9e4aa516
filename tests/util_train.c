/* util_train.c — see util_train.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util_train.h"

#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void tt_make_cfg(st_config *c, const char *pattern) {
    char js[2048];
    snprintf(js, sizeof js,
             "{\"model_type\":\"nemotron_h\",\"vocab_size\":23,\"hidden_size\":16,\"hybrid_override_pattern\":\"%s\","
             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":4,"
             "\"mamba_num_heads\":4,\"mamba_head_dim\":4,\"ssm_state_size\":4,\"n_groups\":2,\"conv_kernel\":4,"
             "\"intermediate_size\":12,\"n_routed_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,"
             "\"n_shared_experts\":1,\"moe_shared_expert_intermediate_size\":8,\"routed_scaling_factor\":2.5,"
             "\"norm_topk_prob\":true,\"layer_norm_epsilon\":1e-5}",
             pattern);
    json_error_t je;
    json_t *j = json_loads(js, 0, &je);
    assert_non_null(j);
    if (st_config_parse(j, "test", c)) fail_msg("config: %s", st_last_error());
    json_decref(j);
}

static uint64_t g_rng = 42;
void tt_seed(uint64_t s) { g_rng = s; }
double tt_urand(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((g_rng >> 11) + 0.5) / 9007199254740992.0;
}
float tt_nrand(void) { return (float)(sqrt(-2 * log(tt_urand())) * cos(6.283185307 * tt_urand())); }
void tt_rand_tokens(int32_t *x, int n, int V) { for (int i = 0; i < n; i++) x[i] = (int32_t)(tt_urand() * V) % V; }

void tt_randomize(st_tmodel *m) {
    st_tmodel_init(m, 7);
    for (int i = 0; i < m->n_p; i++) {
        st_tparam *t = &m->p[i];
        float *w = st_tw(m, i);
        const char *n = t->name;
        if (strstr(n, "A_log") || strstr(n, "dt_bias") || strstr(n, "conv1d")) continue;
        for (size_t j = 0; j < t->numel; j++) {
            if (strstr(n, "e_score_correction_bias")) w[j] = 0.05f * tt_nrand();
            else if (t->ndim == 1) w[j] = 1.0f + 0.2f * tt_nrand();
            else w[j] = tt_nrand() * 0.8f / sqrtf((float)t->shape[1]);
        }
    }
}

size_t tt_route_len(const st_tmodel *m) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (m->cfg.pattern[l] == 'E') n += (size_t)m->B * m->T * m->cfg.num_experts_per_tok;
    return n;
}
void tt_routes_save(const st_tmodel *m, int32_t *save) {
    size_t at = 0, n = (size_t)m->B * m->T * m->cfg.num_experts_per_tok;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (m->cfg.pattern[l] == 'E') { memcpy(save + at, st_tmodel_route(m, l), n * sizeof(int32_t)); at += n; }
}
int tt_routes_equal(const st_tmodel *m, const int32_t *save) {
    size_t at = 0, n = (size_t)m->B * m->T * m->cfg.num_experts_per_tok;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (m->cfg.pattern[l] != 'E') continue;
        if (memcmp(st_tmodel_route(m, l), save + at, n * sizeof(int32_t))) return 0;
        at += n;
    }
    return 1;
}
